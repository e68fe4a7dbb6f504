"""Trigger inversion: finds a planted trigger where it is, and needs a larger mask on a clean encoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from encoder_clean.data.builtin import make_builtin
from encoder_clean.encoders import create_encoder, list_archs
from encoder_clean.errors import UserError
from encoder_clean.pretrain import SimCLRConfig, pretrain_simclr
from encoder_clean.scan.invert import InversionConfig, invert_trigger, mean_pairwise_cosine
from encoder_clean.scan.verdict import BACKDOOR, CLEAN, calibrate_threshold, get_preset, score_for, verdict_for
from tests.scan.planted import LEFT, SIZE, TOP, PlantedBackdoor

CPU = torch.device("cpu")
QUICK = InversionConfig(steps=200, batch_size=16, restarts=2)


@pytest.fixture(scope="module")
def shapes():
    return make_builtin("shapes", train=400, test=20, seed=0)


@pytest.fixture(scope="module")
def trained_tiny(shapes):
    """A tiny encoder after a short SimCLR run (a random one maps everything to nearly one point)."""
    torch.manual_seed(0)
    encoder = create_encoder("resnet10-cifar-w8").add_head()
    pretrain_simclr(encoder, shapes.train.images, SimCLRConfig(epochs=10, batch_size=64), seed=0, device=CPU)
    return encoder.eval()


@pytest.fixture(scope="module")
def inversions(trained_tiny, shapes):
    clean = invert_trigger(trained_tiny, shapes.train.images, QUICK, device=CPU, seed=0)
    planted = invert_trigger(PlantedBackdoor(trained_tiny), shapes.train.images, QUICK, device=CPU, seed=0)
    return clean, planted


def test_mean_pairwise_cosine_matches_the_pairs():
    features = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    unit = torch.nn.functional.normalize(features, dim=-1)
    expected = [(u @ u.T).sum().sub(7).div(42) for u in unit]
    assert torch.allclose(mean_pairwise_cosine(features), torch.stack(expected), atol=1e-6)


def test_planted_trigger_is_found_where_it_was_planted(inversions):
    _, planted = inversions
    mask = planted.mask[0]
    assert planted.reached
    assert mask[TOP:TOP + SIZE, LEFT:LEFT + SIZE].sum() / mask.sum() > 0.8
    assert planted.pl1_norm < 1.5 * SIZE * SIZE / mask.numel()


def test_clean_encoder_needs_a_larger_mask(inversions):
    clean, planted = inversions
    assert clean.pl1_norm > 2 * planted.pl1_norm
    assert clean.mask[TOP:TOP + SIZE, LEFT:LEFT + SIZE].sum() / clean.mask.sum() < 0.5


def test_inversion_outputs_are_images_in_range(inversions):
    for found in inversions:
        assert found.mask.shape == (1, 32, 32) and found.pattern.shape == (3, 32, 32)
        for tensor in (found.mask, found.pattern):
            assert tensor.min() >= 0 and tensor.max() <= 1
        assert len(found.restarts_pl1) == QUICK.restarts and found.pl1_norm == min(found.restarts_pl1)


def test_the_encoder_is_not_changed(trained_tiny, shapes):
    before = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    invert_trigger(trained_tiny, shapes.train.images[:32], InversionConfig(steps=3, batch_size=8), device=CPU, seed=0)
    assert all(torch.equal(before[k], v) for k, v in trained_tiny.state_dict().items())


def test_other_input_sizes_work(shapes):
    torch.manual_seed(0)
    encoder = create_encoder("resnet10-cifar-w8", image_size=48).eval()
    found = invert_trigger(encoder, shapes.train.images[:16], InversionConfig(steps=3, batch_size=4), device=CPU, seed=0)
    assert found.mask.shape == (1, 48, 48)


@pytest.mark.parametrize("change", [{"steps": 0}, {"batch_size": 1}, {"similarity_target": 1.0},
                                    {"min_initial_coverage": 0.6}, {"lambda_factor": 1.0}])
def test_bad_settings_are_user_errors(shapes, change):
    with pytest.raises(UserError):
        invert_trigger(create_encoder("resnet10-cifar-w8"), shapes.train.images[:8],
                       dataclasses.replace(InversionConfig(), **change), device=CPU, seed=0)


def test_verdict_threshold_and_calibration():
    assert verdict_for(0.01, 0.05) == BACKDOOR and verdict_for(0.05, 0.05) == CLEAN
    assert score_for(0.25) == 0.75
    assert calibrate_threshold([0.2, 0.1, 0.3], margin=0.5) == 0.05
    with pytest.raises(UserError):
        calibrate_threshold([])
    with pytest.raises(UserError):
        get_preset("nope")


@pytest.mark.parametrize("arch", [info.name for info in list_archs()])
def test_every_registered_architecture_can_be_scanned(arch, shapes):
    torch.manual_seed(0)
    encoder = create_encoder(arch).eval()
    found = invert_trigger(encoder, shapes.train.images[:4], InversionConfig(steps=1, batch_size=2, restarts=1),
                           device=CPU, seed=0)
    assert found.mask.shape == (1, encoder.image_size, encoder.image_size)
