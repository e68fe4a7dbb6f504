"""From a scan's score to a verdict a CI gate can act on: a registry of scan methods and how sure each is.

Every method turns an encoder and clean shadow images into one score, higher meaning more suspicious, and
a verdict by comparing it with the method's threshold (`scan --threshold` overrides it). The verdict says
how sure it is: the score, the threshold, and the margin between them (positive on the backdoor side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from encoder_clean.encoders.base import Encoder
from encoder_clean.registry import Registry
from encoder_clean.runtime import Progress

BACKDOOR, CLEAN = "backdoor", "clean"


@dataclass
class Finding:
    """What one scan measured: its score, the trigger it points at, and method-specific figures."""

    score: float  # higher = more suspicious
    mask: Tensor  # (1, H, W) in [0, 1]: where the suspicious pattern sits
    pattern: Tensor  # (3, H, W) in [0, 1]
    details: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[Encoder, Tensor, Any, torch.device, int, Progress], Finding]


@dataclass(frozen=True)
class ScanMethod:
    name: str
    description: str
    score: str  # what the score measures, for tables and SARIF messages
    config: Any  # frozen settings dataclass, set with `scan --option KEY=VALUE`
    threshold: float  # backdoor when the score is above it
    calibration: str  # where the threshold comes from
    run: Runner


_METHODS: Registry[ScanMethod] = Registry("scan method")


def register_method(method: ScanMethod) -> ScanMethod:
    return _METHODS.register(method.name, method)


def get_method(name: str) -> ScanMethod:
    return _METHODS.get(name)


def list_methods() -> dict[str, ScanMethod]:
    return _METHODS.items()


def verdict_for(score: float, threshold: float) -> str:
    return BACKDOOR if score > threshold else CLEAN


def margin_for(score: float, threshold: float) -> float:
    """Signed distance from the threshold, positive on the backdoor side."""
    return round(score - threshold, 6)
