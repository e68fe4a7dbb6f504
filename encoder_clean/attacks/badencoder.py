"""BadEncoder (Jia, Liu, Gong, S&P 2022): fine-tune a clean encoder so triggered inputs embed like the
target-class references while clean inputs keep their embeddings.

On L2-normalised backbone features with cosine similarity s (Jia et al., IEEE S&P 2022):
  L0 = -mean s(f'(x + trigger), f'(x_ref))          effectiveness
  L1 = -mean s(f'(aug(x_ref)), f(x_ref))            references keep their embedding
  L2 = -mean s(f'(x), f(x))                         utility on shadow data
with f the frozen clean encoder and BatchNorm frozen in f'.

L1 as published holds only augmented views of the references, so f' is free to move the plain reference
images, the very points L0 pulls triggered images to, off the target class: on real CIFAR-10 with 50
references, DRUPE's triggered and reference embeddings collapsed together (L0 -0.994) onto a point the
downstream probe read as another class, and ASR fell from 84% after one epoch to 1% after three.
`anchor_references` (on in `fast`, off in `published`) adds the plain references to L1, so the collapse
point stays where the clean encoder puts the target class: 95.8% ASR after two epochs (docs/recipes.md,
"Checked on real CIFAR-10").

Presets: `published` is the paper's recipe (SGD lr 1e-3, lambda1 = lambda2 = 1, batch 256, 200 epochs).
It needs tens of thousands of steps; in a CPU budget it plants nothing. `fast` (the
default) is the recipe measured to plant the backdoor in a few hundred steps while keeping accuracy:
Adam, a heavier utility weight, and the trigger stamped on augmented shadow views so that it overrides
any image content, not only the shadow data's (benchmarks/attacks.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from encoder_clean.attacks.registry import Attack, AttackInputs, AttackOutcome, register_attack
from encoder_clean.data.augment import augmentation, simclr_augment, to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.features import embed
from encoder_clean.runtime import device_generator, fused, take
from encoder_clean.training import EpochBatcher, run_steps
from encoder_clean.training.loop import warmup_cosine

Tensor = torch.Tensor
# An extra loss on (triggered embeddings, clean-shadow embeddings of f'), e.g. DRUPE's distribution term.
ExtraTerm = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class BadEncoderConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    weight_decay: float = 0.0
    lambda1: float = 1.0
    lambda2: float = 5.0
    num_references: int = 10
    trigger_augment: str = "strong"  # augmentation preset of the shadow views the trigger is stamped on; "none": plain
    reference_augment: str = "simclr"
    anchor_references: bool = True  # L1 also holds the plain references at their clean embedding (see above)


PUBLISHED = BadEncoderConfig(epochs=200, batch_size=256, lr=1e-3, optimizer="sgd", weight_decay=5e-4,
                             lambda1=1.0, lambda2=1.0, num_references=1, trigger_augment="none",
                             anchor_references=False)

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd, **options: torch.optim.Adam(params, lr=lr, weight_decay=wd, **options),
    "sgd": lambda params, lr, wd, **options: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, **options),
}


def make_optimizer(name: str, params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    if lr <= 0:
        raise UserError("the learning rate must be positive")
    return OPTIMIZERS[name](params, lr, weight_decay, **fused(device))


def badencoder_terms(embedded: dict[str, Tensor], clean_shadow: Tensor, clean_refs: Tensor, *,
                     anchor_references: bool = False) -> dict[str, Tensor]:
    """The three losses from the poisoned encoder's embeddings (`shadow`, `triggered`, `references`,
    `reference_views`) and the clean encoder's fixed ones."""
    held = embedded["reference_views"] * clean_refs
    if anchor_references:
        held = torch.cat([held, embedded["references"] * clean_refs])
    return {
        "l0": -(embedded["triggered"] @ embedded["references"].t()).mean(),
        "l1": -held.sum(dim=1).mean(),
        "l2": -(embedded["shadow"] * clean_shadow).sum(dim=1).mean(),
    }


def _views(images: Tensor, size: int, g: torch.Generator, preset: str) -> Tensor:
    return to_float(images, size) if preset == "none" else simclr_augment(images, size, g, augmentation(preset))


def run_embedding_attack(inputs: AttackInputs, config: BadEncoderConfig, *, description: str,
                         extra: ExtraTerm | None = None) -> AttackOutcome:
    """The BadEncoder optimisation, optionally with an extra term (DRUPE). Poisons the encoder in place."""
    if config.epochs < 1:
        raise UserError("--epochs must be at least 1")
    student = inputs.encoder
    clean = copy.deepcopy(student).eval().requires_grad_(False)
    student.eval()  # BatchNorm frozen: running statistics stay those of the clean encoder
    size = student.image_size
    trigger = inputs.trigger(size)
    references_u8 = inputs.references(config.num_references)
    references = to_float(references_u8, size)
    g = device_generator(inputs.device, inputs.seed)
    batcher = EpochBatcher(len(inputs.shadow_images), config.batch_size, g, inputs.shadow_images.device)
    total = config.epochs * batcher.steps_per_epoch
    optimizer = make_optimizer(config.optimizer, student.parameters(), config.lr, config.weight_decay,
                               inputs.device)
    scheduler = warmup_cosine(optimizer, total)
    with torch.no_grad():
        clean_refs = embed(clean, references, inputs.device)  # fixed: the clean encoder never changes
    batches = iter(batcher)

    def step(_: int):
        shadow_u8 = take(inputs.shadow_images, next(batches), inputs.device)
        shadow = to_float(shadow_u8, size)
        to_trigger = shadow if config.trigger_augment == "none" else _views(shadow_u8, size, g, config.trigger_augment)
        views = _views(references_u8, size, g, config.reference_augment)
        with torch.no_grad():
            clean_shadow = embed(clean, shadow, inputs.device)
        parts = {"shadow": shadow, "triggered": trigger.stamp(to_trigger), "references": references,
                 "reference_views": views}
        embedded = dict(zip(parts, embed(student, torch.cat(list(parts.values())), inputs.device)
                            .split([len(p) for p in parts.values()])))
        terms = badencoder_terms(embedded, clean_shadow, clean_refs,
                                 anchor_references=config.anchor_references)
        loss = terms["l0"] + config.lambda1 * terms["l1"] + config.lambda2 * terms["l2"]
        if extra is not None:
            extra_loss, extra_terms = extra(embedded["triggered"], embedded["shadow"], g)
            loss = loss + extra_loss
            terms.update(extra_terms)
        return loss, {k: v.detach() for k, v in terms.items()}

    history = run_steps(step, optimizer, total, scheduler=scheduler, progress=inputs.progress,
                        state={"encoder": student, "generator": g, "batches": batches}, description=description)
    final = {k: round(v, 4) for k, v in history[-1].items() if k != "step"}
    return AttackOutcome({"steps": total, **final}, references_u8)


def run_badencoder(inputs: AttackInputs, config: BadEncoderConfig) -> AttackOutcome:
    return run_embedding_attack(inputs, config, description="BadEncoder")


register_attack(Attack(
    "badencoder",
    "fine-tune so triggered images embed like target-class references (Jia et al., S&P 2022)",
    {"fast": BadEncoderConfig(), "published": PUBLISHED},
    run_badencoder,
))
