"""Backdoor scanning: `run_scan(encoder, shadow, method=...) -> ScanOutcome`, one entry point for the CLI
and the Python API; the methods live in a registry (`list_methods()`, `encoder_clean.scan.verdict`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import Tensor

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.options import apply_options
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.scan import methods as _methods  # noqa: F401  (registers the methods)
from encoder_clean.scan.verdict import BACKDOOR, CLEAN, get_method, list_methods, margin_for, verdict_for

__all__ = ["BACKDOOR", "CLEAN", "ScanOutcome", "list_methods", "run_scan", "scan_config"]


@dataclass
class ScanOutcome:
    method: str
    verdict: str  # "backdoor" or "clean"
    score: float  # higher = more suspicious
    threshold: float  # backdoor when score > threshold
    margin: float  # score - threshold: how far, and on which side, the verdict lies
    score_name: str
    calibration: str
    mask: Tensor  # (1, H, W): where the suspicious pattern sits
    pattern: Tensor  # (3, H, W)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        """The JSON fields of this outcome (without the tensors)."""
        return {"method": self.method, "verdict": self.verdict, "score": self.score, "threshold": self.threshold,
                "margin": self.margin, "score_name": self.score_name, "calibration": self.calibration,
                **self.details, "seconds": round(self.seconds, 2)}


def scan_config(method: str, options: Sequence[str] = (), **settings: Any) -> Any:
    """The method's settings with `KEY=VALUE` options and keyword settings applied, checked."""
    chosen = get_method(method)
    config = apply_options(chosen.config, list(options), f"scan --method {method}")
    config = replace(config, **settings) if settings else config
    config.check()
    return config


def run_scan(encoder: Encoder, shadow: Tensor, *, method: str = "encoder-clean", config: Any = None,
             threshold: float | None = None, device: torch.device | str = "cpu", seed: int = 0,
             progress: Progress = NULL_PROGRESS) -> ScanOutcome:
    """Scan `encoder` on clean uint8 `shadow` images (N, 3, H, W) and judge it.

    `config` defaults to the method's settings; `threshold` to the method's. The encoder's training mode
    and gradient flags are left as they were."""
    chosen = get_method(method)
    config = chosen.config if config is None else config
    config.check()
    limit = chosen.threshold if threshold is None else float(threshold)
    if limit != limit:
        raise UserError("scan: threshold must be a number")
    started = time.perf_counter()
    found = chosen.run(encoder, shadow, config, torch.device(device), seed, progress)
    return ScanOutcome(chosen.name, verdict_for(found.score, limit), found.score, limit, margin_for(found.score, limit),
                       chosen.score, chosen.calibration, found.mask, found.pattern, found.details,
                       time.perf_counter() - started)
