"""Inverted triggers for distillation: what the poisoned encoder's own backdoor looks like, found on clean data.

Before distilling, `invert_triggers` runs the scanner's inversion (`scan.invert`) on the poisoned
encoder over the defender's clean subset: the small mask and pattern that collapse its embeddings. A
backdoored encoder gives back something close to its real trigger (same place, similar content); a clean
one gives back a large, meaningless mask. `stamp_some` then pastes one of these triggers on a share of the
student's views while the teacher sees them clean, so the student learns to embed a stamped image like
the clean one: unlearning the backdoor where it is, instead of hoping random patches hit it.
Only clean images are used; nothing about the real trigger or the target class is known.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from encoder_clean.encoders.base import Encoder
from encoder_clean.parallel import draw_rows
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.scan.invert import InversionConfig, invert_trigger
from encoder_clean.triggers import PatchTrigger

Tensor = torch.Tensor


def invert_triggers(encoder: Encoder, images: Tensor, count: int, *, device: torch.device, seed: int,
                    steps: int | None = None, config: InversionConfig | None = None,
                    progress: Progress = NULL_PROGRESS) -> list[PatchTrigger]:
    """`count` triggers inverted from `encoder` on uint8 `images`, each search from its own seed, with
    `config` (default: `InversionConfig()`, the collapse search with restarts) and its number of `steps`
    when given.
    The encoder's training mode and gradient flags are left as they were (`invert_trigger` keeps them)."""
    config = config or InversionConfig()
    if steps is not None:
        config = replace(config, steps=steps)
    triggers = []
    for index in range(count):
        found = invert_trigger(encoder, images, config, device=device, seed=seed + 7919 * index, progress=progress)
        triggers.append(PatchTrigger(f"inverted-{index}", found.pattern, found.mask))
    return triggers


def stack_triggers(triggers: Sequence[PatchTrigger], device: torch.device) -> tuple[Tensor, Tensor]:
    """Patterns (K, 3, H, W) and single-channel masks (K, 1, H, W) on `device`."""
    patterns = torch.stack([t.pattern for t in triggers]).to(device)
    masks = torch.stack([t.mask.amax(dim=0, keepdim=True) for t in triggers]).to(device)
    return patterns, masks


def stamp_some(images: Tensor, patterns: Tensor, masks: Tensor, prob: float, g: torch.Generator) -> Tensor:
    """Stamp a random one of the K triggers on a random `prob` share of [0, 1] images (N, 3, H, W)."""
    n, device = images.shape[0], images.device
    chosen = draw_rows(lambda rows: torch.rand(rows, generator=g, device=device), n) < prob
    which = draw_rows(lambda rows: torch.randint(0, len(patterns), (rows,), generator=g, device=device), n)
    mask = masks[which].to(images.dtype) * chosen.view(-1, 1, 1, 1).to(images.dtype)
    return images * (1 - mask) + patterns[which].to(images.dtype) * mask
