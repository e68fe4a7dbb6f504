"""MOTH: hardening changes the encoder but not its BatchNorm statistics, uses only the classes in the
labels it is given, is deterministic for a seed, and rejects bad settings with one-line UserErrors."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

import encoder_clean.defenses.moth as moth
from encoder_clean.evaluate.features import embed_batches
from encoder_clean.data.augment import to_float
from encoder_clean.defenses.registry import DefenseInputs, get_defense
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError
from encoder_clean.runtime import device_generator

CPU = torch.device("cpu")
FAST = replace(moth.MOTHConfig(), epochs=1, harden_steps=2, batch_size=16, inversion_steps=3, probe_steps=5,
               recheck_pairs=1)
CLASSES = (0, 3, 7)


def _inputs(encoder, data, classes=CLASSES, seed=0):
    keep = torch.isin(data.train.labels, torch.tensor(classes))
    return DefenseInputs(encoder, data.train.images[keep], data.train.labels[keep], 10, CPU, seed)


def _encoder():
    torch.manual_seed(0)
    return create_encoder("resnet10-cifar-w8").eval()


def test_registered():
    defense = get_defense("moth")
    assert defense.run is moth.run_moth and isinstance(defense.defaults, moth.MOTHConfig)


def test_hardening_changes_weights_not_batchnorm_statistics(tiny_data):
    encoder = _encoder()
    next(encoder.parameters()).requires_grad_(False)  # a caller's frozen parameter stays frozen
    flags = [p.requires_grad for p in encoder.parameters()]
    before = copy.deepcopy(encoder.state_dict())
    outcome = moth.run_moth(_inputs(encoder, tiny_data), FAST)
    after = encoder.state_dict()
    assert [p.requires_grad for p in encoder.parameters()] == flags
    statistics = [k for k in before if "running" in k or "num_batches_tracked" in k]
    assert statistics
    for key in statistics:
        assert torch.equal(after[key], before[key]), key
    changed = [k for k in before if k not in statistics and not torch.equal(after[k], before[k])]
    assert any("conv" in k for k in changed)
    assert not encoder.training
    assert all(p.grad is None for p in encoder.parameters())
    stats = outcome.stats
    assert stats["pairs_hardened"] == len(CLASSES) and stats["steps"] == len(CLASSES) * FAST.harden_steps
    assert 0 <= stats["inverted_mask_size"] <= 1 and stats["recheck_pairs"] == 1
    assert stats["recheck_mask_size_after"] is not None


def test_pairs_come_from_the_labels_given(tiny_data):
    outcome = moth.run_moth(_inputs(_encoder(), tiny_data), replace(FAST, epochs=2))
    pairs = outcome.extra_metadata["moth_pairs"]
    assert len(pairs) == 2 * len(CLASSES)
    assert sorted(source for source, _ in pairs) == sorted(CLASSES * 2)  # each class once per epoch
    assert all(source != target and target in CLASSES for source, target in pairs)


def test_deterministic_for_a_seed(tiny_data):
    runs = []
    for _ in range(2):
        encoder = _encoder()
        outcome = moth.run_moth(_inputs(encoder, tiny_data), FAST)
        runs.append((encoder.state_dict(), outcome.stats))
    assert runs[0][1] == runs[1][1]
    for key in runs[0][0]:
        assert torch.equal(runs[0][0][key], runs[1][0][key]), key


def test_inversion_touches_only_the_trigger(tiny_encoder, tiny_data):
    images = to_float(tiny_data.train.images[:8])
    features = embed_batches(tiny_encoder, tiny_data.train.images[:40], CPU, channels_last=True)
    probe = moth.fit_probe(features, tiny_data.train.labels[:40].long(), 10, FAST)
    state = copy.deepcopy(tiny_encoder.state_dict())
    trigger, flip = moth.invert_trigger(tiny_encoder, probe, images, 1, FAST, device_generator(CPU, 0), CPU)
    assert trigger.mask.shape == (1, 1, 32, 32) and trigger.pattern.shape == (1, 3, 32, 32)
    assert 0 <= float(trigger.mask.min()) and float(trigger.mask.max()) <= 1 and 0 <= flip <= 1
    assert all(p.grad is None for p in tiny_encoder.parameters())
    assert all(p.grad is None for p in probe.parameters())
    for key, value in tiny_encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"harden_steps": 0}, "harden_steps"),
    ({"inversion_steps": 0}, "inversion_steps"), ({"batch_size": 1}, "batch_size"),
    ({"mask_lambda": -1.0}, "mask_lambda"), ({"consistency_weight": -0.5}, "consistency_weight"),
    ({"recheck_pairs": -1}, "recheck_pairs"), ({"inversion_lr": -0.1}, "inversion_lr"),
])
def test_bad_settings(change, message, tiny_encoder, tiny_data):
    with pytest.raises(UserError, match=message):
        moth.run_moth(_inputs(tiny_encoder, tiny_data), replace(FAST, **change))


def test_bad_labels(tiny_encoder, tiny_data):
    with pytest.raises(UserError, match="at least 2 classes"):
        moth.run_moth(_inputs(tiny_encoder, tiny_data, classes=(4,)), FAST)
    images, labels = tiny_data.train.images[:20], tiny_data.train.labels[:20]
    with pytest.raises(UserError, match="one label per clean image"):
        moth.run_moth(DefenseInputs(tiny_encoder, images, labels[:10], 10, CPU, 0), FAST)
    with pytest.raises(UserError, match="labels must lie"):
        moth.run_moth(DefenseInputs(tiny_encoder, images, labels + 10, 10, CPU, 0), FAST)
    with pytest.raises(UserError, match="at least 2 clean images"):
        moth.run_moth(DefenseInputs(tiny_encoder, images[:1], labels[:1], 10, CPU, 0), FAST)
