"""The whole cleaning recipe of `distill`: optional teacher defense, student design, losses, training.

`recommended_for(encoder)` is what `distill` does by default: `RECOMMENDED` for convolutional encoders,
`RECOMMENDED_TRANSFORMER` for vision transformers (the family is told by whether the encoder has
attention taps). `PAPER` is the seed paper's best setting (fine-tuned teacher, warm-up student,
attention loss), kept for comparison (benchmarks/defense_study.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch

from encoder_clean.defenses import DefenseInputs
from encoder_clean.defenses.registry import run_defense
from encoder_clean.distill.inverted import invert_triggers
from encoder_clean.distill.losses import parse_loss_spec
from encoder_clean.distill.students import StudentInputs, get_student
from encoder_clean.distill.trainer import DistillConfig, distill
from encoder_clean.encoders.base import Encoder
from encoder_clean.options import apply_options, describe_options
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.triggers import PatchTrigger

NO_FINETUNE = "none"


@dataclass(frozen=True)
class Recipe:
    finetune: str  # a defense name, or "none"
    student: str
    losses: tuple[str, ...]  # `--loss` specs
    options: tuple[str, ...] = ()  # distill settings as KEY=VALUE
    finetune_options: tuple[str, ...] = ()  # settings of the teacher defense as KEY=VALUE


# Chosen once, offline, from benchmarks/defense_study.py over BadEncoder, DRUPE, BASSL and CTRL
# (docs/recipes.md, "How the convnet recipe was chosen"): the seed paper's setting with AFD in place of
# attention transfer had the highest ACC of the losses on every attack with an ASR near the lowest;
# four-attack means ACC 62.15, ASR 9.51%, 3.18% non-target, against AT's 57.64 / 10.50% / 4.62%.
# A 150-epoch teacher fine-tune was tried as the default and taken back (docs/recipes.md): more ACC
# everywhere and less ASR on real CIFAR-10 at full width, but 2.6-12.7 points more non-target ASR on the
# SimCLR and MoCo v2 victims of benchmarks/ssl_victims.py.
# Session 16 added random-patch consistency to both stages (`patch_prob=0.5`: half of the teacher
# fine-tune's second views and of the student's views carry a random solid, noise, checkerboard or
# image-window patch, pulled toward the clean view's embedding). Without it the recipe's outcome hung on
# its seed (1.4-9.1% non-target ASR on the SimCLR victims of benchmarks/ssl_victims.py over seeds 0-2);
# with it 1.3-2.3% on all six runs, at 61-64 ACC (docs/recipes.md, "Random-patch consistency").
# At run time the recipe sees only the clean subset: no trigger, no test data, nothing tuned per encoder.
PAPER = Recipe(finetune="ft", student="warmup", losses=("at",))
RECOMMENDED = Recipe(finetune="ft", student="warmup", losses=("afd",), options=("patch_prob=0.5",),
                     finetune_options=("patch_prob=0.5",))
# Chosen from benchmarks/vit_study.py on a small ViT (docs/recipes.md, "How the transformer recipe was
# chosen"), where the convnet recipe fails (33.20 ACC / 16.10% ASR: a warm-up student trained from
# scratch on 500 images), while a longer SimCLR fine-tune of the teacher alone removes the backdoor and
# gains accuracy (59.00 / 0.25%); a copy of that teacher distilled with the embedding loss adds ACC
# (61.35 / 0.25%). On the ResNets it keeps a fifth of the embedding attacks' backdoors
# (defense_study.py --tables families), hence two recipes.
RECOMMENDED_TRANSFORMER = Recipe(finetune="ft", student="teacher", losses=("sp",), finetune_options=("epochs=150",))
FAMILY_RECIPES = {"convnet": RECOMMENDED, "transformer": RECOMMENDED_TRANSFORMER}


def encoder_family(encoder: Encoder) -> str:
    """'transformer' for encoders with self-attention taps (ViT, DeiT, DINOv2, CLIP towers), else 'convnet'."""
    return "transformer" if encoder.attention_taps else "convnet"


def recommended_for(encoder: Encoder) -> Recipe:
    return FAMILY_RECIPES[encoder_family(encoder)]


@dataclass
class CleaningResult:
    student: Encoder
    settings: dict[str, object]  # for checkpoint metadata
    stats: dict[str, object] = field(default_factory=dict)  # for JSON


def clean_with_distillation(poisoned: Encoder, clean_images: torch.Tensor, clean_labels: torch.Tensor,
                            num_classes: int, *, finetune: str, student: str, losses: Sequence[str],
                            options: Sequence[str] = (), finetune_options: Sequence[str] = (),
                            student_arch: str | None = None, device: torch.device, seed: int,
                            progress: Progress = NULL_PROGRESS) -> CleaningResult:
    """Teacher = `poisoned` (after the `finetune` defense unless "none"); student per `student`; distil.

    Only the defender's clean subset (`clean_images`, and its labels for MOTH) is used.
    """
    config = apply_options(DistillConfig(), options, "distill")
    config.check()
    specs = [parse_loss_spec(text, poisoned.tap_names, poisoned.attention_taps) for text in losses]
    builder = get_student(student)
    builder.check_arch(student_arch or poisoned.arch, poisoned.arch)  # the teacher keeps this architecture
    teacher = copy.deepcopy(poisoned)
    settings: dict[str, object] = {"finetune": finetune}
    stats: dict[str, object] = {}
    if finetune != NO_FINETUNE:
        defense_config, outcome = run_defense(finetune, DefenseInputs(
            teacher, clean_images, clean_labels, num_classes, device, seed, progress), list(finetune_options))
        settings["finetune_settings"] = describe_options(defense_config)
        stats["finetune"] = outcome.stats
    found: list[float] = []

    def find_triggers(encoder: Encoder, round_index: int) -> list[PatchTrigger]:
        triggers = invert_triggers(encoder, clean_images, config.inverted_triggers, device=device,
                                   seed=seed + 1009 * round_index, steps=config.inversion_steps, progress=progress)
        found.extend(round(float(t.mask.amax(0).mean()), 5) for t in triggers)
        return triggers

    # First inverted on the poisoned encoder as given: its backdoor is the strongest, so the closest to the
    # real trigger; later rounds search the student (trainer.distill).
    triggers = find_triggers(poisoned, 0) if config.inverted_prob > 0 else []
    model = builder.build(StudentInputs(poisoned, student_arch or poisoned.arch, clean_images, device, seed,
                                        config.warmup_epochs, progress, teacher=teacher,
                                        warmup_method=config.warmup_method))
    stats["distill"] = distill(teacher, model, clean_images, specs, config, seed=seed, device=device,
                               progress=progress, triggers=triggers, find_triggers=find_triggers)
    if found:
        stats["inverted_pl1"] = found
    settings.update({"student": student, "student_arch": model.arch, "losses": [str(s) for s in specs],
                     "distill_settings": describe_options(config)})
    return CleaningResult(model, settings, stats)
