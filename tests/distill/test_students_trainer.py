"""Students are initialised as the paper defines them; the trainer moves only the student."""

from __future__ import annotations

import copy

import pytest
import torch

from encoder_clean.data.augment import random_patches
from encoder_clean.data.sampling import clean_subset
from encoder_clean.distill.losses import parse_loss_spec
from encoder_clean.distill.recipe import (PAPER, RECOMMENDED, RECOMMENDED_TRANSFORMER, clean_with_distillation,
                                          recommended_for)
from encoder_clean.distill.students import StudentInputs, get_student, list_students
from encoder_clean.distill.trainer import DistillConfig, distill
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError
from tests.conftest import TINY_ARCH

CPU = torch.device("cpu")


def _student_inputs(poisoned, tiny_data, arch=TINY_ARCH, warmup_epochs=1):
    return StudentInputs(poisoned, arch, tiny_data.train.images[:64], CPU, 0, warmup_epochs)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_students_are_initialised_as_specified(tiny_data):
    torch.manual_seed(123)  # a "poisoned" encoder unlike the seed-0 random student
    tiny_encoder = create_encoder(TINY_ARCH)
    assert set(list_students()) == {"raw", "void", "warmup", "teacher"}
    raw = get_student("raw").build(_student_inputs(tiny_encoder, tiny_data))
    assert raw is not tiny_encoder and _same(raw, tiny_encoder)  # a copy of the poisoned encoder
    void = get_student("void").build(_student_inputs(tiny_encoder, tiny_data))
    void_again = get_student("void").build(_student_inputs(tiny_encoder, tiny_data))
    assert not _same(void, tiny_encoder) and _same(void, void_again)  # random, seeded
    warm = get_student("warmup").build(_student_inputs(tiny_encoder, tiny_data))
    assert not _same(warm, void)  # the same random start, then trained on the clean subset
    wide = get_student("void").build(_student_inputs(tiny_encoder, tiny_data, arch="resnet18-cifar-w16"))
    assert wide.arch == "resnet18-cifar-w16"
    with pytest.raises(UserError):
        get_student("raw").build(_student_inputs(tiny_encoder, tiny_data, arch="resnet18-cifar-w16"))
    with pytest.raises(UserError):
        get_student("warmup").build(_student_inputs(tiny_encoder, tiny_data, warmup_epochs=0))
    teacher = create_encoder(TINY_ARCH).requires_grad_(False)  # a purified teacher, frozen as distill freezes it
    copied = get_student("teacher").build(StudentInputs(tiny_encoder, TINY_ARCH, tiny_data.train.images[:8], CPU, 0, 1,
                                                        teacher=teacher))
    assert copied is not teacher and _same(copied, teacher) and all(p.requires_grad for p in copied.parameters())
    with pytest.raises(UserError):
        get_student("teacher").build(_student_inputs(tiny_encoder, tiny_data))


def test_distill_trains_only_the_student(tiny_encoder, tiny_data):
    teacher = tiny_encoder
    frozen = copy.deepcopy(teacher.state_dict())
    student = create_encoder(TINY_ARCH)
    start = copy.deepcopy(student.state_dict())
    specs = [parse_loss_spec(s, teacher.tap_names) for s in ("at", "sp", "fitnet@layer2")]
    stats = distill(teacher, student, tiny_data.train.images[:64], specs, DistillConfig(epochs=2, batch_size=32,
                    patch_prob=0.5), seed=0, device=CPU)
    assert stats["steps"] == 4 and {"at@layer4", "sp@features", "fitnet@layer2", "ntxent"} <= set(stats)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in start.items())


def test_distill_across_widths(tiny_encoder, tiny_data):
    student = create_encoder("resnet18-cifar-w16")
    specs = [parse_loss_spec(s, tiny_encoder.tap_names) for s in ("at", "fitnet", "kd", "sp", "rkd")]
    stats = distill(tiny_encoder, student, tiny_data.train.images[:32], specs, DistillConfig(epochs=1, batch_size=32),
                    seed=0, device=CPU)
    assert stats["steps"] == 1


@pytest.mark.parametrize("options, losses", [
    (dict(epochs=0), ["at"]), (dict(patch_prob=2.0), ["at"]), (dict(contrastive_weight=0.0), []),
])
def test_bad_distill_settings(options, losses, tiny_encoder, tiny_data):
    specs = [parse_loss_spec(s, tiny_encoder.tap_names) for s in losses]
    with pytest.raises(UserError):
        distill(tiny_encoder, create_encoder(TINY_ARCH), tiny_data.train.images[:32], specs,
                DistillConfig(**options), seed=0, device=CPU)


def test_recipes_run_end_to_end(tiny_encoder, tiny_data, monkeypatch):
    import encoder_clean.distill.trainer as trainer_module
    import encoder_clean.pretrain.core as core

    patched = []  # which stage pasted random patches: the teacher's fine-tune or the student's distillation
    for module, stage in ((core, "teacher"), (trainer_module, "student")):
        real = module.random_patches
        monkeypatch.setattr(module, "random_patches",
                            lambda views, g, prob, *rest, real=real, stage=stage: patched.append(stage) or real(
                                views, g, prob, *rest))
    clean = clean_subset(tiny_data, 0.2, seed=0).split
    for recipe in (RECOMMENDED, PAPER):
        patched.clear()
        result = clean_with_distillation(tiny_encoder, clean.images, clean.labels, tiny_data.num_classes,
                                         finetune=recipe.finetune, student=recipe.student, losses=recipe.losses,
                                         options=(*recipe.options, "epochs=1", "batch_size=16", "warmup_epochs=1"),
                                         finetune_options=(*recipe.finetune_options, "epochs=1", "batch_size=16"),
                                         device=CPU, seed=0)
        assert result.settings["student"] == recipe.student and result.student.arch == TINY_ARCH
        assert result.stats["distill"]["steps"] == 2
        # the recommended recipe teaches both stages to ignore small patches; the paper's setting neither
        assert set(patched) == ({"teacher", "student"} if recipe is RECOMMENDED else set())


def test_random_patches_change_only_a_square_of_the_chosen_images():
    images = torch.rand(64, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    out = random_patches(images, g, prob=0.5, min_frac=0.1, max_frac=0.4)
    changed = (out != images).any(dim=1)  # (N, H, W)
    touched = changed.flatten(1).any(dim=1)
    assert 10 < int(touched.sum()) < 54
    for mask in changed[touched]:
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert height <= 13 and width <= 13  # inside a square of at most 0.4 * 32 px
    assert torch.equal(random_patches(images, g, prob=0.0), images)


def test_each_family_gets_its_recipe(tiny_encoder):
    vit = create_encoder("vit-p4-d4-w64")
    assert recommended_for(tiny_encoder) is RECOMMENDED and recommended_for(vit) is RECOMMENDED_TRANSFORMER
    assert RECOMMENDED_TRANSFORMER.student == "teacher" and "epochs=150" in RECOMMENDED_TRANSFORMER.finetune_options


@pytest.mark.parametrize("student", ["raw", "teacher"])
def test_a_copied_student_refuses_another_arch_before_the_teacher_is_fine_tuned(student, tiny_encoder, tiny_data,
                                                                                monkeypatch):
    import encoder_clean.distill.recipe as recipe_module

    def no_fine_tuning(*args, **kwargs):
        raise AssertionError("the teacher was fine-tuned before the student's architecture was checked")

    monkeypatch.setattr(recipe_module, "run_defense", no_fine_tuning)
    clean = clean_subset(tiny_data, 0.2, seed=0).split
    with pytest.raises(UserError, match="needs --student void or warmup"):
        clean_with_distillation(tiny_encoder, clean.images, clean.labels, tiny_data.num_classes, finetune="ft",
                                student=student, losses=["at"], student_arch="resnet18-cifar-w16", device=CPU, seed=0)
