"""FP, Fine-Pruning (Liu et al., RAID 2018): prune the last stage's channels least active on clean data,
then fine-tune on the clean subset with the pruned channels held at zero.

Backdoor behaviour tends to live in neurons that clean inputs leave dormant; removing them and
fine-tuning lets the remaining ones recover clean accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from encoder_clean.data.augment import to_float
from encoder_clean.defenses.finetune import FinetuneConfig, finetune
from encoder_clean.defenses.registry import Defense, DefenseInputs, DefenseOutcome, register_defense
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.runtime import autocast


@dataclass(frozen=True)
class FinePruneConfig(FinetuneConfig):
    prune_ratio: float = 0.2  # share of the stage's channels to prune
    tap: str = ""  # the stage to prune; empty: the encoder's last layer tap


@torch.no_grad()
def mean_activation(encoder: Encoder, images: torch.Tensor, tap: str, device: torch.device,
                    batch_size: int = 256) -> torch.Tensor:
    """Mean activation of each channel of `tap` over clean uint8 `images` (eval mode)."""
    encoder.eval()
    total = None
    for start in range(0, len(images), batch_size):
        with autocast(device):
            _, maps = encoder.features_with_taps(to_float(images[start:start + batch_size], encoder.image_size), [tap])
        summed = maps[tap].float().sum(dim=(0, 2, 3))
        total = summed if total is None else total + summed
    spatial = maps[tap].shape[2] * maps[tap].shape[3]
    return total / (len(images) * spatial)


def run_fineprune(inputs: DefenseInputs, config: FinePruneConfig) -> DefenseOutcome:
    if not 0 <= config.prune_ratio < 1:
        raise UserError(f"prune_ratio must be in [0, 1), got {config.prune_ratio}")
    encoder = inputs.encoder
    tap = config.tap or encoder.tap_names[-1]
    activation = mean_activation(encoder, inputs.clean_images, tap, inputs.device)
    count = int(round(config.prune_ratio * len(activation)))
    pruned = sorted(torch.argsort(activation)[:count].tolist())  # least active first
    if pruned:
        encoder.zero_tap_channels(tap, pruned)
    stats = finetune(inputs, config, description="fine-pruning",
                     after_step=(lambda: encoder.zero_tap_channels(tap, pruned)) if pruned else None)
    return DefenseOutcome({**stats, "tap": tap, "pruned_channels": len(pruned), "channels": len(activation)},
                          {"pruned": {tap: pruned}})


register_defense(Defense("fp", "prune the last stage's least active channels, then fine-tune (Fine-Pruning)",
                         FinePruneConfig(), run_fineprune))
