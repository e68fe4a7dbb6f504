"""Distil a student from a frozen teacher on the defender's clean subset.

Per step, on a batch of two augmented views of clean images (the seed paper's recipe, arXiv 2403.03846):
  loss = contrastive_weight * NT-Xent(student projections)
       + sum over --loss entries and their taps of weight * D(student tap, teacher tap)
The teacher runs without gradients, in eval mode, once per batch. With `patch_prob > 0` the student
sees its views with random patches pasted on (solid, noise, checkerboard or another image's window)
while the teacher sees them clean, so the student learns to embed a patched image like the clean one.
With `inverted_prob > 0` a share of the student's views carry one of the triggers inverted from the
poisoned encoder on the clean subset instead (`distill.inverted`; the recipe inverts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from encoder_clean.data.augment import augmentation, random_patches, simclr_augment
from encoder_clean.distill.inverted import stack_triggers, stamp_some
from encoder_clean.distill.losses import FEATURES, LossSpec, get_loss
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.pretrain import nt_xent
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, device_generator, fused, take
from encoder_clean.training import EpochBatcher, run_steps
from encoder_clean.training.loop import warmup_cosine
from encoder_clean.triggers import PatchTrigger

TriggerSearch = Callable[[Encoder, int], "list[PatchTrigger]"]  # (student, round) -> newly inverted triggers


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 50  # over the clean subset: 500 images at batch 128 -> 150 steps
    batch_size: int = 128
    lr: float = 1e-3  # Adam, weight decay 1e-6: the seed paper's settings
    weight_decay: float = 1e-6
    temperature: float = 0.5
    contrastive_weight: float = 1.0
    augment: str = "strong"
    patch_prob: float = 0.0  # share of student views with a random patch (0: the paper's recipe)
    patch_min: float = 0.1  # patch side as a fraction of the image side
    patch_max: float = 0.4
    warmup_epochs: int = 20  # pre-training epochs of the warm-up student before distillation
    warmup_method: str = "simclr"  # and its method (`encoder-clean list methods`)
    inverted_prob: float = 0.0  # share of student views stamped with a trigger inverted from the poisoned encoder
    inverted_triggers: int = 1  # how many triggers to invert (each search from its own seed)
    inversion_steps: int = 200  # optimisation steps of each search (the scanner's default)
    inversion_rounds: int = 1  # >1: split training into rounds and invert new triggers on the student before each

    def check(self) -> None:
        if self.epochs < 1:
            raise UserError("--epochs must be at least 1")
        if self.lr <= 0:
            raise UserError("the learning rate must be positive")
        if not 0 <= self.patch_prob <= 1:
            raise UserError(f"patch_prob must be in [0, 1], got {self.patch_prob}")
        if not 0 <= self.inverted_prob <= 1:
            raise UserError(f"inverted_prob must be in [0, 1], got {self.inverted_prob}")
        if min(self.inverted_triggers, self.inversion_steps, self.inversion_rounds) < 1:
            raise UserError("inverted_triggers, inversion_steps and inversion_rounds must be at least 1")
        if not 0 < self.patch_min <= self.patch_max <= 1:
            raise UserError("need 0 < patch_min <= patch_max <= 1")
        if self.contrastive_weight < 0:
            raise UserError("contrastive_weight must be >= 0")


class LossTerms(nn.Module):
    """One loss module per (loss spec, tap), built for the student's and teacher's widths."""

    def __init__(self, specs: Sequence[LossSpec], student_widths: dict[str, int], teacher_widths: dict[str, int]):
        super().__init__()
        self.entries: list[tuple[str, str, float]] = []  # (module key, tap, weight)
        self.terms = nn.ModuleDict()
        for spec in specs:
            for tap in spec.taps:
                key = f"{spec.name}@{tap}".replace(".", "_")  # module names take no dots (ViT taps: blocks.N)
                if key in self.terms:
                    raise UserError(f"--loss {spec.name} is given twice for tap {tap}")
                self.terms[key] = get_loss(spec.name).build(student_widths[tap], teacher_widths[tap])
                self.entries.append((key, tap, spec.weight))

    @property
    def taps(self) -> list[str]:
        return sorted({tap for _, tap, _ in self.entries if tap != FEATURES})

    def forward(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {key: weight * self.terms[key](student[tap].float(), teacher[tap].float().detach())
                 for key, tap, weight in self.entries}
        total = sum(parts.values()) if parts else torch.zeros((), device=next(iter(student.values())).device)
        return total, parts


@torch.no_grad()
def tap_widths(encoder: Encoder, taps: Sequence[str], device: torch.device) -> dict[str, int]:
    """Channel count of each tap (and the embedding size for FEATURES), from one tiny forward pass."""
    was_training = encoder.training
    encoder.eval()
    probe = torch.zeros(2, 3, encoder.image_size, encoder.image_size, device=device)
    features, maps = encoder.features_with_taps(probe, [t for t in taps if t != FEATURES])
    encoder.train(was_training)
    return {FEATURES: features.shape[1], **{tap: m.shape[1] for tap, m in maps.items()}}


def distill(teacher: Encoder, student: Encoder, images: torch.Tensor, specs: Sequence[LossSpec],
            config: DistillConfig, *, seed: int, device: torch.device, progress: Progress = NULL_PROGRESS,
            triggers: Sequence[PatchTrigger] = (), find_triggers: TriggerSearch | None = None
            ) -> dict[str, object]:
    """Train `student` in place from the frozen `teacher` on uint8 `images` (the clean subset).

    `triggers` (inverted ones, at the student's input size) are stamped on `config.inverted_prob` of
    the student's views. With `config.inversion_rounds` > 1 the steps are split into rounds, and before
    each round after the first `find_triggers(student, round)` adds the triggers the student still has:
    the student keeps unlearning what is left of the backdoor, wherever the search finds it now."""
    config.check()
    if config.inverted_prob > 0 and not triggers:
        raise UserError("inverted_prob > 0 needs inverted triggers")
    rounds = config.inversion_rounds if config.inverted_prob > 0 else 1
    if rounds > 1 and find_triggers is None:
        raise UserError("inversion_rounds > 1 needs a trigger search")
    if not specs and config.contrastive_weight == 0:
        raise UserError("nothing to train: give at least one --loss or a contrastive weight above 0")
    teacher.eval().requires_grad_(False)
    student.add_head().train()
    wanted = sorted({tap for spec in specs for tap in spec.taps})
    for model in (teacher, student):
        model.check_taps([t for t in wanted if t != FEATURES])
    terms = LossTerms(specs, tap_widths(student, wanted, device), tap_widths(teacher, wanted, device)).to(device)
    size = student.image_size
    if teacher.image_size != size:
        raise UserError(f"teacher ({teacher.image_size} px) and student ({size} px) take different input sizes")
    g = device_generator(device, seed)
    batcher = EpochBatcher(len(images), config.batch_size, g, images.device)
    total = config.epochs * batcher.steps_per_epoch
    optimizer = torch.optim.Adam(list(student.parameters()) + list(terms.parameters()), lr=config.lr,
                                 weight_decay=config.weight_decay, **fused(device))
    scheduler = warmup_cosine(optimizer, total, min(10, total // 10))
    aug = augmentation(config.augment)
    batches = iter(batcher)
    bank = list(triggers)
    stamps = stack_triggers(bank, device) if bank else None  # rebound between rounds; `step` reads the latest

    def step(_: int):
        batch = take(images, next(batches), device)
        views = torch.cat([simclr_augment(batch, size, g, aug), simclr_augment(batch, size, g, aug)])
        views = views.contiguous(memory_format=torch.channels_last)
        student_views = views
        if config.patch_prob > 0:
            student_views = random_patches(views, g, config.patch_prob, config.patch_min, config.patch_max)
        if config.inverted_prob > 0:
            student_views = stamp_some(student_views, *stamps, config.inverted_prob, g)
        with torch.no_grad(), autocast(device):
            t_features, t_maps = teacher.features_with_taps(views, terms.taps)
        with autocast(device):
            s_features, s_maps = student.features_with_taps(student_views, terms.taps)
            z = student.project(s_features) if config.contrastive_weight > 0 else None
        distill_loss, parts = terms({FEATURES: s_features, **s_maps}, {FEATURES: t_features, **t_maps})
        loss = distill_loss
        metrics = {k: v.detach() for k, v in parts.items()}
        if z is not None:
            half = batch.shape[0]
            contrastive = nt_xent(z[:half], z[half:], config.temperature)
            loss = loss + config.contrastive_weight * contrastive
            metrics["ntxent"] = contrastive.detach()
        return loss, metrics

    history: list[dict[str, float]] = []
    for index, steps in enumerate(split_evenly(total, rounds)):
        if index > 0:
            bank += find_triggers(student, index)
            stamps = stack_triggers(bank, device)
            student.train()
        label = f"distilling (round {index + 1}/{rounds})" if rounds > 1 else "distilling"
        history += run_steps(step, optimizer, steps, scheduler=scheduler, progress=progress, description=label,
                             state={"student": student, "terms": terms, "generator": g, "batches": batches})
    student.eval()
    final = {k: round(v, 5) for k, v in history[-1].items() if k != "step"} if history else {}
    return {"steps": total, **final}


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` steps in `parts` rounds as even as can be (earlier rounds take the remainder); no empty rounds."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
