"""BASSL (Saha et al., CVPR 2022): poison the pre-training set with target-class images carrying the
trigger patch at random positions, then let the victim run ordinary SSL (here SimCLR) on it.

The published setting poisons half of the target category of ImageNet-100, 0.5% of the set; the
`published` preset keeps that rate, `fast` (default) raises it to 10%, the most effective rate measured
in a 3-epoch CPU run (README, Measured).
"""

from __future__ import annotations

import torch

from encoder_clean.attacks.poisoning import DataPoisoningConfig, run_data_poisoning
from encoder_clean.attacks.registry import Attack, AttackInputs, AttackOutcome, register_attack
from encoder_clean.errors import UserError
from encoder_clean.triggers import PatchTrigger, Trigger

Tensor = torch.Tensor


def patch_of(trigger: PatchTrigger) -> tuple[Tensor, Tensor]:
    """The trigger's pattern and mask cropped to the box where its mask is set."""
    rows, cols = torch.nonzero(trigger.mask.amax(dim=0) > 0, as_tuple=True)
    if not len(rows):
        raise UserError(f"trigger {trigger.spec} has an empty mask")
    box = (slice(None), slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    return trigger.pattern[box], trigger.mask[box]


def paste_at_random(images: Tensor, pattern: Tensor, mask: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Paste the (C, h, w) patch onto each [0, 1] image at a uniformly random position.

    Returns the pasted images and the (N, 2) top-left (row, col) of each patch.
    """
    n, _, height, width = images.shape
    h, w = pattern.shape[-2:]
    if h > height or w > width:
        raise UserError(f"the {h}x{w} trigger patch does not fit {height}x{width} images")
    rows = torch.randint(0, height - h + 1, (n,), generator=g, device=g.device).cpu()
    cols = torch.randint(0, width - w + 1, (n,), generator=g, device=g.device).cpu()
    out = images.clone()
    pattern, mask = pattern.to(images), mask.to(images)
    for i, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):  # one-off, a few hundred images
        region = out[i, :, row:row + h, col:col + w]
        out[i, :, row:row + h, col:col + w] = region * (1 - mask) + pattern * mask
    return out, torch.stack([rows, cols], dim=1)


def poison_bassl(trigger: Trigger, images: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    if not isinstance(trigger, PatchTrigger):
        raise UserError(f"bassl pastes patch triggers; {trigger.spec} is not one (use --attack ctrl)")
    pattern, mask = patch_of(trigger)
    return paste_at_random(images, pattern, mask, g)


def run_bassl(inputs: AttackInputs, config: DataPoisoningConfig) -> AttackOutcome:
    return run_data_poisoning(inputs, config, poison_bassl, "BASSL (SimCLR on poisoned data)")


register_attack(Attack(
    "bassl",
    "poison pre-training data: trigger pasted at random positions on target-class images (Saha et al., CVPR 2022)",
    {"fast": DataPoisoningConfig(poison_rate=0.1), "published": DataPoisoningConfig(poison_rate=0.005)},
    run_bassl,
    default_trigger="white-square",
))
