"""CTRL (Li et al., ICCV 2023): poison 1% of the pre-training set with target-class images carrying a
frequency-domain trigger (high DCT frequencies of the YCbCr chroma channels, `ctrl[:MAGNITUDE]`), then
let the victim run ordinary SimCLR on it (or `method=mocov2|byol`).
"""

from __future__ import annotations

import torch

from encoder_clean.attacks.poisoning import DataPoisoningConfig, run_data_poisoning
from encoder_clean.attacks.registry import Attack, AttackInputs, AttackOutcome, register_attack
from encoder_clean.triggers import Trigger


def poison_ctrl(trigger: Trigger, images: torch.Tensor, _: torch.Generator) -> tuple[torch.Tensor, None]:
    return trigger.stamp(images), None


def run_ctrl(inputs: AttackInputs, config: DataPoisoningConfig) -> AttackOutcome:
    return run_data_poisoning(inputs, config, poison_ctrl, "CTRL")


register_attack(Attack(
    "ctrl",
    "poison pre-training data with a frequency-domain chroma trigger (Li et al., ICCV 2023)",
    {"fast": DataPoisoningConfig(poison_rate=0.01), "published": DataPoisoningConfig(poison_rate=0.01)},
    run_ctrl,
    default_trigger="ctrl",
))
