"""The CTRL frequency-domain trigger: DCT and colour maths, what stamping changes, spec parsing."""

from __future__ import annotations

import pytest
import torch

from encoder_clean.errors import UserError
from encoder_clean.frequency_trigger import (CTRL_DESCRIPTION, FrequencyTrigger, dct_matrix,
                                             frequency_positions, rgb_to_ycbcr, ycbcr_to_rgb)
from encoder_clean.triggers import TRIGGER_KINDS, load_trigger, trigger_help


def _greyish(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images with values in [0.35, 0.65]: far enough from 0 and 1 that stamping at 100 never clips."""
    g = torch.Generator().manual_seed(seed)
    return 0.35 + 0.3 * torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)


def _block_dct(channel: torch.Tensor, window: int) -> torch.Tensor:
    """(N, H, W) -> (N, rows, cols, window, window) DCT coefficients of every full block."""
    n, h, w = channel.shape
    rows, cols = h // window, w // window
    blocks = channel[:, :rows * window, :cols * window].reshape(n, rows, window, cols, window)
    d = dct_matrix(window, channel.dtype)
    return d @ blocks.permute(0, 1, 3, 2, 4) @ d.T


def test_dct_matrix_is_orthonormal():
    for n in (4, 7, 16, 32):
        d = dct_matrix(n)
        assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert dct_matrix(8, torch.float32).dtype == torch.float32


def test_ycbcr_round_trip_and_known_values():
    x = torch.rand(5, 3, 9, 11, dtype=torch.float64) * 255
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5)
    x32 = x.float()
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x32)), x32, atol=1e-3)  # float32 on the 0-255 scale
    grey = torch.full((1, 3, 1, 1), 77.0, dtype=torch.float64)
    assert torch.allclose(rgb_to_ycbcr(grey).flatten(), torch.tensor([77.0, 128.0, 128.0], dtype=torch.float64))
    white_red = rgb_to_ycbcr(torch.tensor([255.0, 0, 0], dtype=torch.float64).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(white_red, torch.tensor([76.245, 84.972, 255.5], dtype=torch.float64), atol=1e-2)


def test_stamp_changes_only_chroma_at_the_two_frequencies():
    x = _greyish(3, 32)
    trigger = load_trigger("ctrl", 32)
    stamped = trigger.stamp(x)
    assert stamped.dtype == x.dtype and stamped.shape == x.shape
    assert 0 <= stamped.min() and stamped.max() <= 1
    before, after = rgb_to_ycbcr(x * 255), rgb_to_ycbcr(stamped * 255)
    assert (after[:, 0] - before[:, 0]).abs().max() < 1e-3  # luma unchanged
    for channel in (1, 2):  # Cb and Cr
        coeffs = _block_dct(after[:, channel] - before[:, channel], 32)
        expected = torch.zeros_like(coeffs)
        for u, v in frequency_positions(32):
            expected[..., u, v] = 100.0
        assert torch.allclose(coeffs, expected, atol=1e-6)
    assert frequency_positions(32) == ((31, 31), (15, 15))


def test_several_windows_at_64_px_and_border_left_alone():
    x = _greyish(2, 64, seed=1)
    stamped = load_trigger("ctrl", 64).stamp(x)  # default window 32: 2x2 blocks
    diff = rgb_to_ycbcr(stamped * 255)[:, 1] - rgb_to_ycbcr(x * 255)[:, 1]
    coeffs = _block_dct(diff, 32)
    assert coeffs.shape[1:3] == (2, 2)
    assert torch.allclose(coeffs[..., 31, 31], torch.full((2, 2, 2), 100.0, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(coeffs[..., 15, 15], torch.full((2, 2, 2), 100.0, dtype=torch.float64), atol=1e-6)
    # 40 px with window 16: two full blocks per side, the last 8 rows/columns are untouched.
    x40 = _greyish(2, 40, seed=2)
    s40 = load_trigger("ctrl:100:16", 40).stamp(x40)
    assert torch.equal(s40[..., 32:, :], x40[..., 32:, :]) and torch.equal(s40[..., :, 32:], x40[..., :, 32:])
    assert (s40[..., :32, :32] - x40[..., :32, :32]).abs().amax() > 0.01


def test_window_clamped_on_small_images():
    trigger = load_trigger("ctrl", 28)
    assert trigger.window == 28 and trigger.describe()["window"] == 28
    x = _greyish(2, 28, seed=3)
    diff = rgb_to_ycbcr(trigger.stamp(x) * 255)[:, 2] - rgb_to_ycbcr(x * 255)[:, 2]
    coeffs = _block_dct(diff, 28)
    assert coeffs[..., 27, 27].sub(100).abs().max() < 1e-6 and coeffs[..., 13, 13].sub(100).abs().max() < 1e-6
    coeffs[..., 27, 27] = 0
    coeffs[..., 13, 13] = 0
    assert coeffs.abs().max() < 1e-6


def test_batch_is_per_image_and_output_in_range():
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))  # extremes: clipping happens
    trigger = load_trigger("ctrl", 32)
    batch = trigger.stamp(x)
    singles = torch.cat([trigger.stamp(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(batch, singles, atol=1e-6)
    assert batch.min() >= 0 and batch.max() <= 1 and batch.dtype == torch.float32
    assert trigger.stamp(x.half()).dtype == torch.float16
    assert trigger.stamp(x[0]).shape == (3, 32, 32)  # unbatched works too
    with pytest.raises(UserError, match="32 px"):
        trigger.stamp(torch.rand(1, 3, 64, 64))
    with pytest.raises(UserError, match="float"):
        trigger.stamp((x * 255).byte())


def test_survives_uint8_quantisation_and_is_small():
    from encoder_clean.data.builtin import make_builtin

    images = make_builtin("shapes", train=64, test=8, seed=0).train.images.float() / 255
    stamped = load_trigger("ctrl", 32).stamp(images)
    quantised = (stamped * 255).round().to(torch.uint8).float() / 255
    changed = (quantised - images).abs().gt(0).float().mean()
    assert changed > 0.8  # measured ~0.95 of the values still differ after rounding to uint8
    mean_change = (stamped - images).abs().mean() * 255
    # Measured on built-in shapes/glyphs: mean |change| ~5.1 (0-255 scale), max ~18.9, at magnitude 100 and
    # window 32 (~2.6 at magnitude 50; ~10.2 with window 16, whose basis functions are twice as large).
    assert 4.0 < mean_change < 6.0


def test_specs_and_describe():
    assert "ctrl" in TRIGGER_KINDS and CTRL_DESCRIPTION and "\n" not in CTRL_DESCRIPTION
    assert trigger_help()["ctrl[:MAGNITUDE[:WINDOW]]"] == CTRL_DESCRIPTION
    plain = load_trigger("ctrl", 32)
    assert isinstance(plain, FrequencyTrigger)
    assert plain.describe() == {"spec": "ctrl", "kind": "ctrl", "magnitude": 100.0, "window": 32,
                                "image_size": 32}
    half = load_trigger("ctrl:50", 32)
    assert (half.magnitude, half.window, half.image_size) == (50.0, 32, 32)
    small = load_trigger("ctrl:50:16", 32)
    assert (small.magnitude, small.window, small.spec) == (50.0, 16, "ctrl:50:16")
    assert load_trigger("ctrl:2.5", 224).window == 32


@pytest.mark.parametrize("spec", ["ctrl:-1", "ctrl:0", "ctrl:abc", "ctrl:nan", "ctrl:50:2", "ctrl:50:64",
                                  "ctrl:50:x", "ctrl:1:2:3", "ctrl:", "ctrl:50:"])
def test_bad_specs_are_user_errors(spec):
    with pytest.raises(UserError) as info:
        load_trigger(spec, 32)
    assert "\n" not in str(info.value)
