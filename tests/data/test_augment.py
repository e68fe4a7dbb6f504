"""Batched augmentations: shapes, ranges, determinism, per-sample randomness, identity settings."""

from __future__ import annotations

import torch

from encoder_clean.data.augment import AugmentConfig, simclr_augment, to_float


def _images(n=8):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_output_shape_range_and_resize():
    out = simclr_augment(_images(), 48, torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 48, 48) and out.min() >= 0 and out.max() <= 1


def test_same_generator_state_same_views_and_samples_differ():
    a = simclr_augment(_images(), 32, torch.Generator().manual_seed(5))
    b = simclr_augment(_images(), 32, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    same = _images(1).repeat(8, 1, 1, 1)
    views = simclr_augment(same, 32, torch.Generator().manual_seed(5))
    assert (views[1:] - views[:1]).abs().flatten(1).amax(dim=1).gt(0.05).all()


def test_identity_settings_leave_images_unchanged():
    config = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                           grayscale_p=0.0)
    images = _images()
    out = simclr_augment(images, 32, torch.Generator().manual_seed(0), config)
    assert torch.allclose(out, to_float(images), atol=1e-5)


def test_flip_only_mirrors():
    config = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0, jitter_p=0.0,
                           grayscale_p=0.0)
    images = _images()
    out = simclr_augment(images, 32, torch.Generator().manual_seed(0), config)
    assert torch.allclose(out, to_float(images).flip(-1), atol=1e-5)


def test_grayscale_makes_channels_equal():
    config = AugmentConfig(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=1.0)
    out = simclr_augment(_images(), 32, torch.Generator().manual_seed(0), config)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
