"""Data-poisoning attacks (BASSL, CTRL): build a poisoned pre-training set, then let the victim run its
ordinary pre-training method on it (SimCLR by default; `method=mocov2|byol`, as BASSL's authors attacked).

The attacker contributes poisoned images to the victim's pre-training set: target-class images (from
the reference data) carrying the trigger. They take the places of randomly chosen clean images, as when
an attacker's uploads make up a share of a scraped set: the set keeps its size, so the victim trains for
as many steps as on the clean set and the poisoned encoder's ACC compares fairly with a clean one
pre-trained the same way. `poison_rate` is their share of the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from encoder_clean.attacks.registry import AttackInputs, AttackOutcome
from encoder_clean.data.augment import augmentation, to_float, to_uint8
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError
from encoder_clean.pretrain import DEFAULT_METHOD, PretrainLoopConfig, pretrain_encoder
from encoder_clean.runtime import device_generator
from encoder_clean.triggers import Trigger

Tensor = torch.Tensor
# Turns target-class images in [0, 1] into poisoned ones: (trigger, images, g) -> (poisoned, positions).
PoisonFn = Callable[[Trigger, Tensor, torch.Generator], tuple[Tensor, "Tensor | None"]]


@dataclass(frozen=True)
class DataPoisoningConfig:
    # The victim's recipe: `pretrain`'s settings, from scratch on the poisoned set (the threat
    # model, and it keeps ACC comparable with a clean encoder pre-trained the same way). Continuing
    # from ENCODER (`from_scratch=false`) raises ACC by further pre-training (+6 points measured).
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3
    poison_rate: float = 0.01
    from_scratch: bool = True  # re-initialise ENCODER's architecture instead of continuing from it
    augment: str = "strong"
    method: str = DEFAULT_METHOD  # the victim's pre-training method (`encoder-clean list methods`)


@dataclass
class PoisonedSet:
    images: Tensor  # uint8 (N, 3, H, W): the clean set with P of its images replaced by poisoned ones
    replaced: Tensor  # (P,) the indices of the replaced images, in the order the poisoned ones were made
    sources: Tensor  # (P,) index into the target-class images each poisoned image was made from
    positions: Tensor | None = None  # (P, 2) top-left (row, col) of a pasted patch, for patch attacks

    @property
    def poisoned(self) -> Tensor:
        """bool (N,): which images are poisoned."""
        mask = torch.zeros(len(self.images), dtype=torch.bool)
        mask[self.replaced] = True
        return mask


def poison_count(rate: float, clean_count: int) -> int:
    if not 0 < rate <= 1:
        raise UserError(f"poison_rate must be in (0, 1], got {rate}")
    return max(1, round(rate * clean_count))


def choose_sources(count: int, available: int, g: torch.Generator) -> Tensor:
    """`count` indices into `available` images: a random order, cycled when more are needed."""
    if available < 1:
        raise UserError("the reference data has no images of the target class")
    order = torch.randperm(available, generator=g, device=g.device).cpu()
    return order.repeat((count + available - 1) // available)[:count]


def build_poisoned_set(shadow: Tensor, target_images: Tensor, rate: float, g: torch.Generator,
                       poison: Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor | None]]) -> PoisonedSet:
    """Replace a `rate` share of the clean images, chosen at random, with
    `poison(sources in [0, 1] at the shadow size, g) -> (poisoned [0, 1], positions)`."""
    size = int(shadow.shape[-1])
    count = poison_count(rate, len(shadow))
    sources = choose_sources(count, len(target_images), g)
    chosen = to_float(target_images[sources.to(target_images.device)], size)
    poisoned, positions = poison(chosen, g)
    replaced = torch.randperm(len(shadow), generator=g, device=g.device).cpu()[:count]
    images = shadow.clone()
    images[replaced.to(shadow.device)] = to_uint8(poisoned).to(shadow.device)
    return PoisonedSet(images, replaced, sources, positions)


def run_data_poisoning(inputs: AttackInputs, config: DataPoisoningConfig, poison: PoisonFn,
                       description: str) -> AttackOutcome:
    """Poison the pre-training set with `poison` (the trigger at the data's own size), then run the
    victim's method on it, re-initialising (or continuing from) the encoder. `description` names the
    attack; the method is added to it."""
    if config.epochs < 1:
        raise UserError("--epochs must be at least 1")
    trigger = inputs.trigger(int(inputs.shadow_images.shape[-1]))
    g = device_generator(inputs.device, inputs.seed)
    poisoned = build_poisoned_set(inputs.shadow_images, inputs.target_images, config.poison_rate, g,
                                  lambda images, gen: poison(trigger, images, gen))
    encoder = inputs.encoder
    if config.from_scratch:
        fresh = create_encoder(encoder.arch).to(inputs.device)
        encoder.load_state_dict(fresh.state_dict(), strict=False)
        encoder.head = None
    victim = PretrainLoopConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                augment=augmentation(config.augment), method=config.method)
    stats = pretrain_encoder(encoder, poisoned.images, victim, seed=inputs.seed, device=inputs.device,
                             progress=inputs.progress, description=f"{description} ({config.method} on poisoned data)")
    used = inputs.target_images[torch.unique(poisoned.sources).to(inputs.target_images.device)]
    return AttackOutcome({**stats, "poisoned_images": len(poisoned.replaced),
                          "training_images": len(poisoned.images)}, used)
