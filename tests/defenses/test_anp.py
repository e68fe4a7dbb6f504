"""ANP: masks stay in [0, 1]; pruning zeroes BN channels exactly and only them; the pruned count obeys
the clean-data tolerance; no BN layer is pruned away; bad settings are one-line UserErrors."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import encoder_clean.defenses.anp as anp
from encoder_clean.data.augment import to_float
from encoder_clean.defenses.registry import DefenseInputs, get_defense
from encoder_clean.errors import UserError
from encoder_clean.runtime import device_generator

CPU = torch.device("cpu")
# Few steps, a large mask learning rate so that masks move and hit the [0, 1] bounds within them.
FAST = replace(anp.ANPConfig(), steps=4, batch_size=32, lr=50.0, holdout_fraction=0.25)


def _inputs(encoder, data, count=96, seed=0):
    images = data.train.images[:count]
    # Labels the defense must not need: ANP is label-free.
    return DefenseInputs(encoder, images, torch.full((count,), -1), 10, CPU, seed)


def _bn_layers(encoder):
    return {n: m for n, m in encoder.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_registered():
    defense = get_defense("anp")
    assert defense.run is anp.run_anp and isinstance(defense.defaults, anp.ANPConfig)


def test_masks_stay_in_unit_interval(tiny_encoder, tiny_data):
    seen = []
    before = copy.deepcopy(tiny_encoder.state_dict())
    g = device_generator(CPU, 0)
    masks, history = anp.optimize_masks(tiny_encoder, tiny_data.train.images[:64], FAST, g, CPU,
                                        observe=lambda m: seen.append((float(m.min()), float(m.max()))))
    assert len(seen) == FAST.steps and history
    assert all(0.0 <= low <= high <= 1.0 for low, high in seen)
    assert 0.0 <= float(masks.min()) and float(masks.max()) <= 1.0
    assert float(masks.min()) < 1.0  # they moved
    assert masks.numel() == sum(m.num_features for m in _bn_layers(tiny_encoder).values())
    for key, value in tiny_encoder.state_dict().items():  # optimisation leaves the encoder alone
        assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in tiny_encoder.parameters())


def test_zero_batchnorm_channels_gives_exact_zero_outputs():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    kept = {k: v.clone() for k, v in bn.state_dict().items()}
    anp.zero_batchnorm_channels(bn, [1, 4])
    assert torch.equal(bn.weight[[1, 4]], torch.zeros(2)) and torch.equal(bn.bias[[1, 4]], torch.zeros(2))
    others = [0, 2, 3, 5]
    assert torch.equal(bn.weight[others], kept["weight"][others])
    assert torch.equal(bn.running_mean, kept["running_mean"])
    x = torch.randn(3, 6, 5, 5) * 100
    for mode in (False, True):
        out = bn.train(mode)(x)
        assert torch.equal(out[:, [1, 4]], torch.zeros(3, 2, 5, 5))
        assert out[:, others].abs().sum() > 0
    with pytest.raises(ValueError):
        anp.zero_batchnorm_channels(bn, [6])


def test_pruning_zeroes_only_candidates_and_keeps_every_layer(tiny_encoder, tiny_data):
    before = copy.deepcopy(tiny_encoder.state_dict())
    config = replace(FAST, threshold=1.0, tolerance=1e9)
    outcome = anp.run_anp(_inputs(tiny_encoder, tiny_data), config)
    stats, pruned = outcome.stats, outcome.extra_metadata["pruned_batchnorm_channels"]
    # A huge tolerance prunes every candidate.
    assert stats["pruned"] == stats["candidates"] > 0
    assert sum(len(c) for c in pruned.values()) == stats["pruned"]
    assert stats["pruned_per_layer"] == {name: len(c) for name, c in pruned.items()}
    layers = _bn_layers(tiny_encoder)
    hooks, outputs = [], {}
    for name in pruned:
        hooks.append(layers[name].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.clone())))
    tiny_encoder.features(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    for hook in hooks:
        hook.remove()
    for name, channels in pruned.items():
        assert torch.equal(outputs[name][:, channels], torch.zeros_like(outputs[name][:, channels]))
    for key, value in tiny_encoder.state_dict().items():
        layer, _, kind = key.rpartition(".")
        if layer in pruned and kind in ("weight", "bias"):
            channels = pruned[layer]
            assert torch.equal(value[channels], torch.zeros(len(channels)))
            rest = [c for c in range(len(value)) if c not in channels]
            assert torch.equal(value[rest], before[key][rest]), key
        else:
            assert torch.equal(value, before[key]), key  # ANP only prunes
    for name, layer in layers.items():  # no layer is pruned away
        assert len(pruned.get(name, [])) < layer.num_features
        assert bool((layer.weight != 0).any())


def test_zero_tolerance_prunes_nothing(tiny_encoder, tiny_data):
    before = copy.deepcopy(tiny_encoder.state_dict())
    outcome = anp.run_anp(_inputs(tiny_encoder, tiny_data), replace(FAST, threshold=1.0, tolerance=0.0))
    assert outcome.stats["candidates"] > 0 and outcome.stats["pruned"] == 0
    assert outcome.stats["feature_drift"] == 0.0
    for key, value in tiny_encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def _drift(encoder, neurons, candidates, count, holdout):
    """1 - cos between the features of a really pruned copy and the original encoder."""
    pruned = copy.deepcopy(encoder)
    layers = dict(pruned.named_modules())
    starts = torch.tensor([0] + neurons.sizes).cumsum(0).tolist()
    for flat in candidates[:count].tolist():
        layer = max(i for i, s in enumerate(starts[:-1]) if s <= flat)
        anp.zero_batchnorm_channels(layers[neurons.names[layer]], [flat - starts[layer]])
    with torch.no_grad():
        x = to_float(holdout)
        a, b = F.normalize(pruned.features(x), dim=1), F.normalize(encoder.features(x), dim=1)
    return float((1 - (a * b).sum(dim=1)).mean())


def test_pruned_count_respects_the_tolerance(tiny_encoder, tiny_data):
    neurons = anp.BatchNormNeurons.of(tiny_encoder)
    masks = torch.rand(neurons.total, generator=torch.Generator().manual_seed(0))
    candidates = anp.pruning_candidates(neurons, masks, threshold=0.5)
    assert torch.all(masks[candidates][1:] >= masks[candidates][:-1])  # ascending
    holdout = tiny_data.train.images[:40]
    full = _drift(tiny_encoder, neurons, candidates, len(candidates), holdout)
    tolerance = full / 4
    count, drift, all_drift = anp.select_pruning(tiny_encoder, neurons, candidates, holdout, tolerance, CPU)
    assert 0 < count < len(candidates)
    assert all_drift == pytest.approx(full, abs=1e-5)
    assert drift <= tolerance
    assert _drift(tiny_encoder, neurons, candidates, count, holdout) == pytest.approx(drift, abs=1e-5)
    assert _drift(tiny_encoder, neurons, candidates, count + 1, holdout) > tolerance


def test_candidates_never_empty_a_layer():
    layers = [nn.BatchNorm2d(3), nn.BatchNorm2d(2)]
    neurons = anp.BatchNormNeurons(["a", "b"], layers)
    masks = torch.tensor([0.1, 0.05, 0.15, 0.9, 0.01])
    candidates = anp.pruning_candidates(neurons, masks, threshold=0.2)
    assert candidates.tolist() == [4, 1, 0]  # 2 (the largest of layer a) stays; 3 is above the threshold


def test_deterministic(tiny_data):
    from encoder_clean.encoders import create_encoder

    states, stats = [], []
    for _ in range(2):
        torch.manual_seed(0)
        encoder = create_encoder("resnet10-cifar-w8").eval()
        stats.append(anp.run_anp(_inputs(encoder, tiny_data), replace(FAST, threshold=0.9, tolerance=0.2)).stats)
        states.append(encoder.state_dict())
    assert stats[0] == stats[1]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


@pytest.mark.parametrize("change, message", [
    ({"eps": 1.5}, "eps"), ({"eps": -0.1}, "eps"), ({"threshold": 1.2}, "threshold"),
    ({"threshold": -0.1}, "threshold"), ({"alpha": 2.0}, "alpha"), ({"steps": 0}, "steps"),
    ({"tolerance": -1.0}, "tolerance"), ({"lr": 0.0}, "lr"), ({"batch_size": 1}, "batch_size"),
    ({"holdout_fraction": 1.0}, "holdout_fraction"), ({"augment": "nope"}, "augmentation"),
])
def test_bad_settings(change, message, tiny_encoder, tiny_data):
    with pytest.raises(UserError, match=message):
        anp.run_anp(_inputs(tiny_encoder, tiny_data), replace(FAST, **change))


def test_too_few_images(tiny_encoder, tiny_data):
    with pytest.raises(UserError, match="at least 2 clean images"):
        anp.run_anp(_inputs(tiny_encoder, tiny_data, count=1), FAST)
