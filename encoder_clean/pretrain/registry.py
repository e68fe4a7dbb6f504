"""Pre-training method registry (`pretrain --method`): what a method is and what it builds.

A method is a name, a one-line description, its settings (a frozen dataclass whose defaults are the
published ones, overridable as `KEY=VALUE`) and a builder. The builder makes the method's `Objective`:
what the method trains beside the encoder and its projection head (a predictor), what it keeps without
training (a momentum copy, a queue of negatives), the loss of a batch of two views, and the update
after each optimiser step. The training loop itself is one for every method (`pretrain.core`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from encoder_clean.encoders.base import Encoder
from encoder_clean.options import apply_options
from encoder_clean.registry import Registry

Tensor = torch.Tensor


@dataclass(frozen=True)
class Schedule:
    """What a method may need to know about the run it is built for."""

    total_steps: int
    batch_size: int  # global, over all data-parallel processes
    images: int  # training images
    generator: torch.Generator  # the run's generator on the compute device (seeded, shared by all ranks)


class Objective(nn.Module):
    """A method's state beside the online encoder, and its loss.

    Its parameters that require gradients are optimised with the encoder's; its state dict (momentum
    copies, queues, counters) is saved in resume checkpoints. The online encoder is passed in, not held,
    so that it is saved once and its weights are not part of this module.
    """

    def loss(self, encoder: Encoder, views: Tensor, device: torch.device) -> Tensor:
        """The loss of `views`: 2N float images, the first view of N images, then the second."""
        raise NotImplementedError

    def update(self, encoder: Encoder) -> None:
        """After each optimiser step (momentum updates); nothing by default."""

    def metrics(self) -> dict[str, Tensor]:
        """Diagnostics of the last `loss` (detached scalars), logged beside the loss; none by default."""
        return {}

    def lr_scales(self) -> dict[nn.Module, float]:
        """Parts of this objective trained at a multiple of the run's learning rate (the multiple follows
        the same warm-up and decay); none by default."""
        return {}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    defaults: Any  # frozen settings dataclass with the published values
    build: Callable[[Encoder, Any, Schedule], Objective]

    def settings(self, assignments: tuple[str, ...] | list[str] = ()) -> Any:
        """The defaults with `KEY=VALUE` assignments applied."""
        return apply_options(self.defaults, assignments, f"method {self.name}")


_METHODS: Registry[Method] = Registry("pre-training method")


def register_method(method: Method) -> Method:
    return _METHODS.register(method.name, method)


def get_method(name: str) -> Method:
    return _METHODS.get(name)


def list_methods() -> dict[str, Method]:
    return _METHODS.items()
