"""Momentum copies of a network, shared by the methods that keep one (MoCo's key encoder, BYOL's target)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` that no gradient reaches: it moves only by `momentum_update`."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, momentum: float | torch.Tensor) -> None:
    """target = momentum * target + (1 - momentum) * online, parameter by parameter.

    Buffers (BatchNorm statistics) are not averaged: the copy keeps its own from its own forward passes,
    as in the MoCo and BYOL reference code.
    """
    for kept, moving in zip(target.parameters(), online.parameters(), strict=True):
        kept.mul_(momentum).add_(moving.detach() * (1 - momentum))
