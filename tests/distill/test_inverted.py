"""Inverted triggers for distillation: searched on the poisoned encoder, stamped on a share of the student's views."""

from __future__ import annotations

import pytest
import torch

from encoder_clean.distill.inverted import invert_triggers, stack_triggers, stamp_some
from encoder_clean.distill.recipe import clean_with_distillation
from encoder_clean.distill.trainer import DistillConfig, distill, split_evenly
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError
from encoder_clean.scan.invert import InversionConfig
from encoder_clean.triggers import PatchTrigger
from tests.conftest import TINY_ARCH
from tests.scan.planted import LEFT, SIZE, TOP, PlantedBackdoor

CPU = torch.device("cpu")
QUICK = InversionConfig(steps=120, batch_size=16, restarts=2)


def _square(name: str, top: int, left: int, value: float) -> PatchTrigger:
    pattern = torch.full((3, 32, 32), value)
    mask = torch.zeros(1, 32, 32)
    mask[:, top:top + 4, left:left + 4] = 1
    return PatchTrigger(name, pattern, mask)


def test_stamp_some_stamps_the_chosen_share_with_one_of_the_triggers():
    images = torch.rand(400, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    first, second = _square("a", 0, 0, 1.0), _square("b", 20, 20, 0.0)
    stacked = stack_triggers([first, second], CPU)
    assert torch.equal(stamp_some(images, *stacked, 0.0, torch.Generator().manual_seed(1)), images)
    single = stamp_some(images, *stack_triggers([first], CPU), 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(single, first.stamp(images))
    half = stamp_some(images, *stacked, 0.5, torch.Generator().manual_seed(2))
    by_first = (half == first.stamp(images)).flatten(1).all(1)
    by_second = (half == second.stamp(images)).flatten(1).all(1)
    untouched = (half == images).flatten(1).all(1)
    assert bool((by_first | by_second | untouched).all())  # every image: one whole trigger or none
    assert 150 <= int((by_first | by_second).sum()) <= 250 and int(by_first.sum()) > 50 and int(by_second.sum()) > 50


def test_the_inverted_trigger_covers_the_planted_one_and_leaves_the_encoder_as_it_was(tiny_data):
    torch.manual_seed(0)
    poisoned = PlantedBackdoor(create_encoder(TINY_ARCH)).train()
    triggers = invert_triggers(poisoned, tiny_data.train.images[:64], 2, device=CPU, seed=0, config=QUICK)
    assert [t.spec for t in triggers] == ["inverted-0", "inverted-1"]
    assert poisoned.training and all(p.requires_grad for p in poisoned.parameters())
    for trigger in triggers:
        mask = trigger.mask.amax(dim=0)
        inside = mask[TOP:TOP + SIZE, LEFT:LEFT + SIZE].sum()
        assert inside > 0.5 * mask.sum()  # most of the mask sits on the planted square


def test_recipe_inverts_on_the_poisoned_encoder_and_records_it(tiny_encoder, tiny_data):
    clean = tiny_data.train
    result = clean_with_distillation(tiny_encoder, clean.images[:32], clean.labels[:32], tiny_data.num_classes,
                                     finetune="none", student="raw", losses=("afd",),
                                     options=("epochs=1", "batch_size=16", "inverted_prob=0.5", "inverted_triggers=2",
                                              "inversion_steps=5"),
                                     device=CPU, seed=0)
    assert len(result.stats["inverted_pl1"]) == 2 and result.settings["distill_settings"]["inverted_prob"] == 0.5
    assert result.stats["distill"]["steps"] == 2


def test_later_rounds_search_the_student_again(tiny_encoder, tiny_data):
    clean = tiny_data.train
    result = clean_with_distillation(tiny_encoder, clean.images[:48], clean.labels[:48], tiny_data.num_classes,
                                     finetune="none", student="raw", losses=("afd",),
                                     options=("epochs=1", "batch_size=16", "inverted_prob=1", "inversion_rounds=2",
                                              "inversion_steps=5"), device=CPU, seed=0)
    assert len(result.stats["inverted_pl1"]) == 2  # one search on the poisoned encoder, one on the student
    assert result.stats["distill"]["steps"] == 3
    assert split_evenly(10, 3) == [4, 3, 3] and split_evenly(2, 5) == [1, 1] and sum(split_evenly(150, 4)) == 150


def test_inverted_settings_are_checked(tiny_encoder, tiny_data):
    for bad in (DistillConfig(inverted_prob=1.5), DistillConfig(inverted_triggers=0), DistillConfig(inversion_steps=0),
                DistillConfig(inversion_rounds=0)):
        with pytest.raises(UserError):
            bad.check()
    with pytest.raises(UserError, match="inverted triggers"):
        distill(tiny_encoder, create_encoder(TINY_ARCH), tiny_data.train.images[:16], [],
                DistillConfig(inverted_prob=0.5), seed=0, device=CPU)
