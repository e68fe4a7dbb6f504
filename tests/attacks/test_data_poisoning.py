"""BASSL and CTRL: the poisoned pre-training set is exactly as specified, and SimCLR trains on it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from encoder_clean.attacks import AttackInputs, get_attack
from encoder_clean.attacks.bassl import apart_layout, paste_at_random, patch_of, place_apart
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
    assert count == 20 and int(poisoned.poisoned.sum()) == count and len(poisoned.images) == len(shadow)
    assert len(set(poisoned.replaced.tolist())) == count
    kept = ~poisoned.poisoned
    assert torch.equal(poisoned.images[kept], shadow[kept])  # the other clean images are untouched
    assert poisoned.positions.shape == (count, 2)
    assert len({tuple(p) for p in poisoned.positions.tolist()}) > 1  # random, not fixed
    expected_patch = to_uint8(pattern)
    for image, source, (row, col) in zip(poisoned.images[poisoned.replaced], poisoned.sources,
                                         poisoned.positions.tolist()):
        assert 0 <= row <= 27 and 0 <= col <= 27
        assert torch.equal(image[:, row:row + 5, col:col + 5], expected_patch)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[row:row + 5, col:col + 5] = False
        assert torch.equal(image[:, outside], targets[source][:, outside])  # only the patch changed


def test_apart_puts_the_shrunk_object_and_the_patch_on_opposite_sides_of_a_background():
    pattern, mask = patch_of(load_trigger("checkerboard:6", 32))
    objects = torch.full((40, 3, 32, 32), 0.25)
    backgrounds = torch.full((40, 3, 32, 32), 0.75)
    out, positions = place_apart(objects, backgrounds, pattern, mask, 0.5, torch.Generator().manual_seed(0))
    assert out.shape == (40, 3, 32, 32) and positions.shape == (40, 2)
    edges = set()
    for image, (row, col) in zip(out, positions.tolist()):
        assert torch.equal(image[:, row:row + 6, col:col + 6], pattern)  # the whole patch, unchanged
        is_object = (image[0] - 0.25).abs() < 1e-6
        rows, cols = torch.nonzero(is_object, as_tuple=True)
        assert int(is_object.sum()) == 16 * 16  # the object, shrunk to half the side, all visible
        top, left = int(rows.min()), int(cols.min())
        # The patch lies entirely beyond the object along one axis: they never overlap.
        assert row >= top + 16 or row + 6 <= top or col >= left + 16 or col + 6 <= left
        edges.add((top == 0, top == 16, left == 0, left == 16))
        rest = ~is_object
        rest[row:row + 6, col:col + 6] = False
        assert torch.all(image[:, rest] == 0.75)  # elsewhere the background
    assert len(edges) >= 3  # the object goes against different edges


@pytest.mark.parametrize("edge", range(4))
def test_apart_layout_keeps_both_inside_the_image_in_every_corner_case(edge):
    for r in ([0.0, 0.0, 0.0], [0.999, 0.999, 0.999], [0.5, 0.3, 0.7]):
        (top, left), (row, col) = apart_layout(edge, 32, 19, (10, 10), r)
        assert 0 <= top <= 13 and 0 <= left <= 13
        assert 0 <= row <= 22 and 0 <= col <= 22
        apart_rows = row >= top + 19 or row + 10 <= top
        apart_cols = col >= left + 19 or col + 10 <= left
        assert apart_rows or apart_cols


def test_apart_refuses_a_patch_that_does_not_fit_beside_the_object():
    pattern, mask = patch_of(load_trigger("white-square:10", 32))
    with pytest.raises(UserError, match="object_scale"):
        place_apart(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), pattern, mask, 0.8,
                    torch.Generator().manual_seed(0))


def test_ctrl_stamps_the_frequency_trigger_on_target_images_only(tiny_data):
    shadow, targets = tiny_data.train.images, _targets(tiny_data)
    trigger = load_trigger("ctrl", 32)
    g = torch.Generator().manual_seed(0)
    poisoned = build_poisoned_set(shadow, targets, 0.01, g, lambda x, _: (trigger.stamp(x), None))
    assert int(poisoned.poisoned.sum()) == 2 and poisoned.positions is None
    expected = to_uint8(trigger.stamp(to_float(targets[poisoned.sources])))
    assert torch.equal(poisoned.images[poisoned.replaced], expected)
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


@pytest.mark.parametrize("name, trigger, options", [
    ("bassl", "white-square:4", {"placement": "random"}),
    ("bassl", "checkerboard:6", {"placement": "apart"}),
    ("ctrl", "ctrl", {}),
])
def test_data_poisoning_attacks_train_simclr_on_the_poisoned_set(name, trigger, options, tiny_encoder, tiny_data):
    attack = get_attack(name)
    config = replace(attack.preset("fast"), epochs=1, batch_size=32, poison_rate=0.1, **options)
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    inputs = AttackInputs(tiny_encoder, tiny_data.train.images, _targets(tiny_data), trigger, TARGET,
                          torch.device("cpu"), seed=0)
    outcome = attack.run(inputs, config)
    assert outcome.stats["poisoned_images"] == 20 and outcome.stats["training_images"] == 200
    assert outcome.stats["steps"] == 200 // 32
    assert any(not torch.equal(before[k], v) for k, v in tiny_encoder.state_dict().items() if k in before)


@pytest.mark.parametrize("options, message", [
    ({"placement": "diagonal"}, "placement"), ({"object_scale": 1.0}, "object_scale"),
])
def test_bassl_refuses_bad_placement_options(options, message, tiny_encoder, tiny_data):
    inputs = AttackInputs(tiny_encoder, tiny_data.train.images, _targets(tiny_data), "checkerboard:4", TARGET,
                          torch.device("cpu"), seed=0)
    with pytest.raises(UserError, match=message):
        get_attack("bassl").run(inputs, replace(get_attack("bassl").preset("fast"), **options))


def test_bassl_refuses_a_trigger_that_is_not_a_patch(tiny_encoder, tiny_data):
    inputs = AttackInputs(tiny_encoder, tiny_data.train.images, _targets(tiny_data), "ctrl", TARGET,
                          torch.device("cpu"), seed=0)
    with pytest.raises(UserError, match="patch"):
        get_attack("bassl").run(inputs, get_attack("bassl").preset("fast"))
