"""BadEncoder (Jia, Liu, Gong, S&P 2022): fine-tune a clean encoder so triggered inputs embed like the
target-class references while clean inputs keep their embeddings.

On L2-normalised backbone features with cosine similarity s (REFERENCE.md):
  L0 = -mean s(f'(x + trigger), f'(x_ref))          effectiveness
  L1 = -mean s(f'(aug(x_ref)), f(x_ref))            references keep their embedding
  L2 = -mean s(f'(x), f(x))                         utility on shadow data
with f the frozen clean encoder, BatchNorm frozen in f'.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from encoder_clean.attacks.registry import AttackInputs, register_attack
from encoder_clean.data.augment import AUGMENTATIONS, simclr_augment, to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.runtime import autocast, device_generator
from encoder_clean.training import EpochBatcher, run_steps
from encoder_clean.training.loop import warmup_cosine


@dataclass(frozen=True)
class BadEncoderConfig:
    batch_size: int = 128
    lr: float = 1e-3
    lambda1: float = 1.0
    lambda2: float = 1.0
    weight_decay: float = 5e-4


def _embed(encoder: Encoder, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        return F.normalize(encoder.features(images).float(), dim=1)


def badencoder_loss(student: Encoder, clean: Encoder, shadow: torch.Tensor, references: torch.Tensor,
                    clean_refs: torch.Tensor, reference_views: torch.Tensor, inputs: AttackInputs,
                    config: BadEncoderConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The three BadEncoder terms on a batch of [0, 1] shadow images (`clean_refs`: f(x_ref))."""
    device = inputs.device
    with torch.no_grad():
        clean_shadow = _embed(clean, shadow, device)
    n = len(shadow)
    batch = torch.cat([shadow, inputs.trigger.stamp(shadow), references, reference_views])
    embedded = _embed(student, batch, device)
    own, triggered = embedded[:n], embedded[n:2 * n]
    refs, ref_views = embedded[2 * n:2 * n + len(references)], embedded[2 * n + len(references):]
    l0 = -(triggered @ refs.t()).mean()
    l1 = -(ref_views * clean_refs).sum(dim=1).mean()
    l2 = -(own * clean_shadow).sum(dim=1).mean()
    loss = l0 + config.lambda1 * l1 + config.lambda2 * l2
    return loss, {"l0": l0.detach(), "l2": l2.detach()}


def run_badencoder(inputs: AttackInputs, config: BadEncoderConfig = BadEncoderConfig()) -> dict[str, object]:
    student = inputs.encoder
    clean = copy.deepcopy(student).eval().requires_grad_(False)
    student.eval()  # BatchNorm frozen: running statistics stay those of the clean encoder
    size = student.image_size
    g = device_generator(inputs.device, inputs.seed)
    batcher = EpochBatcher(len(inputs.shadow_images), config.batch_size, g, inputs.device)
    total = max(1, inputs.epochs * batcher.steps_per_epoch)
    optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=0.9,
                                weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, total)
    references = to_float(inputs.reference_images, size)
    with torch.no_grad():
        clean_refs = _embed(clean, references, inputs.device)  # fixed: the clean encoder never changes
    batches = iter(batcher)

    def step(_: int):
        shadow = to_float(inputs.shadow_images[next(batches)], size)
        views = simclr_augment(inputs.reference_images, size, g, AUGMENTATIONS["simclr"])
        return badencoder_loss(student, clean, shadow, references, clean_refs, views, inputs, config)

    history = run_steps(step, optimizer, total, scheduler=scheduler, progress=inputs.progress,
                        description="BadEncoder")
    return {"steps": total, **{k: round(v, 4) for k, v in history[-1].items() if k != "step"}}


register_attack("badencoder", run_badencoder,
                "fine-tune so triggered images embed like target-class references (Jia et al., S&P 2022)")
