"""Teacher-defense registry (`purify --method`): what a defense is given and what it gives back.

A defense is a name, a one-line description, default settings (a frozen dataclass, overridable with
`--option KEY=VALUE`) and a function that cleans `DefenseInputs.encoder` in place. Defenses see only the
defender's clean subset of the training split (images and, for methods that need them, its labels):
never test data, triggers or poisoned data, and they choose no setting by attack success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.registry import Registry
from encoder_clean.options import apply_options
from encoder_clean.runtime import NULL_PROGRESS, Progress


@dataclass
class DefenseInputs:
    """Everything a defense may use; images are uint8 (N, 3, H, W) on `device`."""

    encoder: Encoder  # cleaned in place
    clean_images: torch.Tensor  # the defender's clean subset (the first --clean-fraction of the training split)
    clean_labels: torch.Tensor  # their labels (only MOTH uses them)
    num_classes: int
    device: torch.device
    seed: int
    progress: Progress = NULL_PROGRESS


@dataclass
class DefenseOutcome:
    stats: dict[str, object]  # figures the defense measured (steps, pruned channels, final loss, ...)
    extra_metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Defense:
    name: str
    description: str
    defaults: Any  # frozen settings dataclass
    run: Callable[[DefenseInputs, Any], DefenseOutcome]


_DEFENSES: Registry[Defense] = Registry("defense")


def register_defense(defense: Defense) -> Defense:
    return _DEFENSES.register(defense.name, defense)


def get_defense(name: str) -> Defense:
    return _DEFENSES.get(name)


def list_defenses() -> dict[str, Defense]:
    return _DEFENSES.items()


def run_defense(name: str, inputs: DefenseInputs, assignments: list[str]) -> tuple[Any, DefenseOutcome]:
    """Look up a defense, apply `KEY=VALUE` settings to its defaults, and run it on `inputs`."""
    defense = get_defense(name)
    config = apply_options(defense.defaults, assignments, f"defense {name}")
    if len(inputs.clean_images) < 2:
        raise UserError(f"the defender's clean subset holds {len(inputs.clean_images)} image(s); "
                        f"raise --clean-fraction")
    return config, defense.run(inputs, config)
