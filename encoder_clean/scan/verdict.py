"""From an inverted trigger to a verdict: the PL1-norm against a threshold calibrated on clean encoders.

Each preset is an inversion setting with the threshold calibrated for it by benchmarks/scan_zoo.py on
clean encoders only (`calibrate_threshold`); users override the threshold with `scan --threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from encoder_clean.errors import UserError
from encoder_clean.scan.invert import PLAIN_DECREE, InversionConfig

BACKDOOR, CLEAN = "backdoor", "clean"


@dataclass(frozen=True)
class ScanPreset:
    name: str
    description: str
    config: InversionConfig
    threshold: float  # backdoor when the PL1-norm is below it


PRESETS: dict[str, ScanPreset] = {}


def register_preset(preset: ScanPreset) -> ScanPreset:
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> ScanPreset:
    if name not in PRESETS:
        raise UserError(f"unknown scan method {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def verdict_for(pl1_norm: float, threshold: float) -> str:
    return BACKDOOR if pl1_norm < threshold else CLEAN


def score_for(pl1_norm: float) -> float:
    """Suspicion in [0, 1]: higher when a smaller mask collapses the embeddings (what AUROC ranks)."""
    return round(1.0 - pl1_norm, 6)


def calibrate_threshold(clean_pl1: Sequence[float], margin: float = 0.8) -> float:
    """A threshold from clean encoders only: `margin` times the smallest clean PL1-norm, so every
    calibration encoder is judged clean with room to spare."""
    if not clean_pl1:
        raise UserError("calibration needs at least one clean encoder")
    return round(margin * min(clean_pl1), 4)


# calibrate_threshold over benchmarks/scan_zoo.py's three calibration encoders (PL1 0.1096, 0.0324,
# 0.0542 with the default settings): 0.8 x 0.0324. Provisional until the zoo run is complete (issue #5).
register_preset(ScanPreset(
    "encoder-clean", "restarts from several mask coverages, similarity target relative to the clean baseline",
    InversionConfig(), threshold=0.0259))
register_preset(ScanPreset(
    "decree", "plain DECREE: one start, absolute similarity target 0.99, threshold 0.1 as published",
    PLAIN_DECREE, threshold=0.1))
