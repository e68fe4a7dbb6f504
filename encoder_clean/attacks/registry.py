"""Attack registry: what every attack is given, what it gives back, and how attacks are looked up.

An attack is a name, a one-line description, named presets of its settings (frozen dataclasses:
`published`, the paper's recipe, and `fast`, the default, a recipe measured to work in a few hundred
steps), and a function that poisons `AttackInputs.encoder` in place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.registry import Registry
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.triggers import Trigger, load_trigger


@dataclass
class AttackInputs:
    """Everything an attack may use; images are uint8 (N, 3, H, W) on `device`."""

    encoder: Encoder  # poisoned in place
    shadow_images: torch.Tensor  # the attacker's pre-training-like data (`--data`)
    target_images: torch.Tensor  # target-class images of the downstream data (`--reference-data`), in order
    trigger_spec: str
    target_class: int
    device: torch.device
    seed: int
    progress: Progress = NULL_PROGRESS

    def trigger(self, image_size: int | None = None) -> Trigger:
        """The trigger at `image_size` pixels (default: the encoder's input size)."""
        return load_trigger(self.trigger_spec, image_size or self.encoder.image_size)

    def references(self, count: int) -> torch.Tensor:
        """The first `count` target-class images: the attack's reference inputs."""
        if count < 1:
            raise UserError("the number of references must be at least 1")
        if count > len(self.target_images):
            raise UserError(f"{count} references asked for but the reference data has only "
                            f"{len(self.target_images)} images of class {self.target_class}")
        return self.target_images[:count]


@dataclass
class AttackOutcome:
    stats: dict[str, object]  # figures the attack measured (steps, final losses, poisoned count, ...)
    references: torch.Tensor  # the target-class images it used (uint8), recorded by hash in metadata
    extra_metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Attack:
    name: str
    description: str
    presets: dict[str, Any]  # preset name -> frozen settings dataclass; "fast" is the default
    run: Callable[[AttackInputs, Any], AttackOutcome]
    default_trigger: str = "white-square"

    def preset(self, name: str) -> Any:
        if name not in self.presets:
            raise UserError(f"attack {self.name} has no preset {name!r}; known: {', '.join(self.presets)}")
        return self.presets[name]


_ATTACKS: Registry[Attack] = Registry("attack")


def register_attack(attack: Attack) -> Attack:
    return _ATTACKS.register(attack.name, attack)


def get_attack(name: str) -> Attack:
    return _ATTACKS.get(name)


def list_attacks() -> dict[str, Attack]:
    return _ATTACKS.items()


def image_hashes(images: torch.Tensor) -> list[str]:
    """SHA-256 (first 16 hex digits) of each uint8 image's bytes, so a checkpoint names its references."""
    return [hashlib.sha256(image.contiguous().cpu().numpy().tobytes()).hexdigest()[:16] for image in images]
