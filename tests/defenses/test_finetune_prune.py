"""FT and FP: fine-tuning changes the weights; fine-pruning zeroes the least active channels for good."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from encoder_clean.data.sampling import clean_subset
from encoder_clean.defenses import DefenseInputs, get_defense, list_defenses
from encoder_clean.defenses.fineprune import mean_activation
from encoder_clean.defenses.registry import run_defense
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError
from tests.conftest import TINY_ARCH


def _inputs(encoder, tiny_data, count=64):
    clean = clean_subset(tiny_data, count / len(tiny_data.train), seed=0).split
    return DefenseInputs(encoder, clean.images, clean.labels, tiny_data.num_classes, torch.device("cpu"), 0)


def test_registry_holds_the_four_teacher_defenses():
    assert {"ft", "fp", "anp", "moth"} <= set(list_defenses())
    with pytest.raises(UserError):
        get_defense("nope")


def test_finetune_changes_the_encoder(tiny_encoder, tiny_data):
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    _, outcome = run_defense("ft", _inputs(tiny_encoder, tiny_data), ["epochs=2", "batch_size=32"])
    after = tiny_encoder.state_dict()
    assert outcome.stats["steps"] == 4
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


def test_fineprune_zeroes_the_least_active_channels_and_keeps_them_zero(tiny_encoder, tiny_data):
    inputs = _inputs(tiny_encoder, tiny_data)
    activation = mean_activation(tiny_encoder, inputs.clean_images, "layer4", inputs.device)
    config, outcome = run_defense("fp", inputs, ["epochs=2", "batch_size=32", "prune_ratio=0.25"])
    pruned = outcome.extra_metadata["pruned"]["layer4"]
    assert len(pruned) == round(0.25 * len(activation)) == outcome.stats["pruned_channels"]
    assert set(pruned) == set(torch.argsort(activation)[:len(pruned)].tolist())
    tiny_encoder.eval()
    with torch.no_grad():
        _, maps = tiny_encoder.features_with_taps(torch.rand(8, 3, 32, 32), ["layer4"])
    assert torch.all(maps["layer4"][:, pruned] == 0)  # really zero, after fine-tuning too
    kept = [c for c in range(len(activation)) if c not in pruned]
    assert maps["layer4"][:, kept].abs().sum() > 0


def test_zero_tap_channels_refuses_a_stage_without_a_shortcut_convolution():
    encoder = create_encoder(TINY_ARCH)
    with pytest.raises(UserError):
        encoder.zero_tap_channels("layer1", [0])  # layer1 adds the stem's output unchanged


@pytest.mark.parametrize("method, options", [
    ("fp", ["prune_ratio=1.5"]), ("ft", ["epochs=0"]), ("ft", ["lr=-1"]), ("ft", ["nosuch=1"]),
    ("ft", ["patch_prob=1.5"]),
])
def test_bad_settings_raise_user_errors(method, options, tiny_encoder, tiny_data):
    with pytest.raises(UserError):
        run_defense(method, _inputs(tiny_encoder, tiny_data), options)


def test_defenses_get_only_the_clean_subset(tiny_data):
    fields = {f.name for f in dataclasses.fields(DefenseInputs)}
    assert fields == {"encoder", "clean_images", "clean_labels", "num_classes", "device", "seed", "progress"}
    sample = clean_subset(tiny_data, 0.05, seed=0)
    assert len(sample) == 10 and torch.equal(sample.split.images, tiny_data.train.images[sample.index])


def test_patched_finetune_patches_only_the_second_views_and_is_deterministic(tiny_encoder, tiny_data, monkeypatch):
    import encoder_clean.pretrain.core as core

    seen = []
    real = core.random_patches

    def spy(views, g, prob, *args):
        seen.append((len(views), prob))
        return real(views, g, prob, *args)

    monkeypatch.setattr(core, "random_patches", spy)
    runs = {}
    for name, options in (("patched", ["patch_prob=1.0"]), ("again", ["patch_prob=1.0"]), ("plain", [])):
        encoder = copy.deepcopy(tiny_encoder)
        seen.clear()
        run_defense("ft", _inputs(encoder, tiny_data), ["epochs=1", "batch_size=32", *options])
        assert seen == ([(32, 1.0), (32, 1.0)] if options else [])  # per step: the 32 second views of 64
        runs[name] = encoder.state_dict()
    changed = [k for k in runs["plain"] if k.endswith("weight")]
    assert all(torch.equal(runs["patched"][k], runs["again"][k]) for k in changed)
    assert any(not torch.equal(runs["patched"][k], runs["plain"][k]) for k in changed)
