"""CTRL (Li et al., ICCV 2023): poison 1% of the pre-training set with target-class images carrying a
frequency-domain trigger (high DCT frequencies of the YCbCr chroma channels, `ctrl[:MAGNITUDE]`), then
let the victim run ordinary SimCLR on it.
"""

from __future__ import annotations

import torch

from encoder_clean.attacks.poisoning import DataPoisoningConfig, build_poisoned_set, run_data_poisoning
from encoder_clean.attacks.registry import Attack, AttackInputs, AttackOutcome, register_attack


def run_ctrl(inputs: AttackInputs, config: DataPoisoningConfig) -> AttackOutcome:
    trigger = inputs.trigger(int(inputs.shadow_images.shape[-1]))
    g = torch.Generator(device=inputs.device).manual_seed(inputs.seed)
    poisoned = build_poisoned_set(inputs.shadow_images, inputs.target_images, config.poison_rate, g,
                                  lambda images, _: (trigger.stamp(images), None))
    return run_data_poisoning(inputs, config, poisoned, "CTRL (SimCLR on poisoned data)")


register_attack(Attack(
    "ctrl",
    "poison pre-training data with a frequency-domain chroma trigger (Li et al., ICCV 2023)",
    {"fast": DataPoisoningConfig(poison_rate=0.01), "published": DataPoisoningConfig(poison_rate=0.01)},
    run_ctrl,
    default_trigger="ctrl",
))
