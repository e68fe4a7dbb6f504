"""BASSL and CTRL: the poisoned pre-training set is exactly as specified, and SimCLR trains on it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from encoder_clean.attacks import AttackInputs, get_attack
from encoder_clean.attacks.bassl import paste_at_random, patch_of
from encoder_clean.attacks.poisoning import build_poisoned_set, poison_count
from encoder_clean.data.augment import to_float, to_uint8
from encoder_clean.errors import UserError
from encoder_clean.triggers import load_trigger

TARGET = 3


def _targets(data):
    return data.test.images[data.test.labels == TARGET]


def test_bassl_pastes_the_patch_at_the_recorded_random_positions(tiny_data):
    shadow, targets = tiny_data.train.images, _targets(tiny_data)
    pattern, mask = patch_of(load_trigger("checkerboard:5", 32))
    g = torch.Generator().manual_seed(0)
    poisoned = build_poisoned_set(shadow, targets, 0.1, g, lambda x, gen: paste_at_random(x, pattern, mask, gen))
    count = poison_count(0.1, len(shadow))
    assert count == 20 and int(poisoned.poisoned.sum()) == count
    assert torch.equal(poisoned.images[:len(shadow)], shadow)  # the clean set is untouched
    assert poisoned.positions.shape == (count, 2)
    assert len({tuple(p) for p in poisoned.positions.tolist()}) > 1  # random, not fixed
    expected_patch = to_uint8(pattern)
    for image, source, (row, col) in zip(poisoned.images[len(shadow):], poisoned.sources, poisoned.positions.tolist()):
        assert 0 <= row <= 27 and 0 <= col <= 27
        assert torch.equal(image[:, row:row + 5, col:col + 5], expected_patch)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[row:row + 5, col:col + 5] = False
        assert torch.equal(image[:, outside], targets[source][:, outside])  # only the patch changed


def test_ctrl_stamps_the_frequency_trigger_on_target_images_only(tiny_data):
    shadow, targets = tiny_data.train.images, _targets(tiny_data)
    trigger = load_trigger("ctrl", 32)
    g = torch.Generator().manual_seed(0)
    poisoned = build_poisoned_set(shadow, targets, 0.01, g, lambda x, _: (trigger.stamp(x), None))
    assert int(poisoned.poisoned.sum()) == 2 and poisoned.positions is None
    expected = to_uint8(trigger.stamp(to_float(targets[poisoned.sources])))
    assert torch.equal(poisoned.images[poisoned.poisoned], expected)
    assert not torch.equal(expected, targets[poisoned.sources])


def test_sources_cycle_when_more_poison_than_target_images(tiny_data):
    targets = _targets(tiny_data)[:3]
    g = torch.Generator().manual_seed(0)
    poisoned = build_poisoned_set(tiny_data.train.images, targets, 0.05, g, lambda x, _: (x, None))
    assert len(poisoned.sources) == 10 and set(poisoned.sources.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_bad_poison_rates_are_refused(rate):
    with pytest.raises(UserError, match="poison_rate"):
        poison_count(rate, 100)


@pytest.mark.parametrize("name, trigger", [("bassl", "white-square:4"), ("ctrl", "ctrl")])
def test_data_poisoning_attacks_train_simclr_on_the_poisoned_set(name, trigger, tiny_encoder, tiny_data):
    attack = get_attack(name)
    config = replace(attack.preset("fast"), epochs=1, batch_size=32, poison_rate=0.1)
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    inputs = AttackInputs(tiny_encoder, tiny_data.train.images, _targets(tiny_data), trigger, TARGET,
                          torch.device("cpu"), seed=0)
    outcome = attack.run(inputs, config)
    assert outcome.stats["poisoned_images"] == 20 and outcome.stats["training_images"] == 220
    assert outcome.stats["steps"] == 220 // 32
    assert any(not torch.equal(before[k], v) for k, v in tiny_encoder.state_dict().items() if k in before)


def test_bassl_refuses_a_trigger_that_is_not_a_patch(tiny_encoder, tiny_data):
    inputs = AttackInputs(tiny_encoder, tiny_data.train.images, _targets(tiny_data), "ctrl", TARGET,
                          torch.device("cpu"), seed=0)
    with pytest.raises(UserError, match="patch"):
        get_attack("bassl").run(inputs, get_attack("bassl").preset("fast"))
