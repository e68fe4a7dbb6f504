"""Attack registry and what every attack is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.triggers import Trigger


@dataclass
class AttackInputs:
    """Everything an attack may use; images are uint8 (N, 3, H, W) on `device`."""

    encoder: Encoder  # poisoned in place
    shadow_images: torch.Tensor  # the attacker's (pre-training-like) data
    reference_images: torch.Tensor  # images of the target class from the downstream data
    trigger: Trigger
    target_class: int
    epochs: int
    device: torch.device
    seed: int
    progress: Progress = NULL_PROGRESS


AttackFn = Callable[[AttackInputs], dict[str, object]]
_ATTACKS: dict[str, tuple[AttackFn, str]] = {}


def register_attack(name: str, run: AttackFn, description: str) -> None:
    if name in _ATTACKS:
        raise ValueError(f"attack {name!r} registered twice")
    _ATTACKS[name] = (run, description)


def get_attack(name: str) -> AttackFn:
    if name not in _ATTACKS:
        raise UserError(f"unknown attack {name!r}; known: {', '.join(sorted(_ATTACKS))}")
    return _ATTACKS[name][0]


def list_attacks() -> dict[str, str]:
    return {name: text for name, (_, text) in sorted(_ATTACKS.items())}
