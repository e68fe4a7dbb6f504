"""Is a window's collapse a trigger's, or an encoder that any smooth patch collapses? Two cues on the best
window's pattern, measured on the scan's evaluation images.

Barely trained encoders are collapsed by a plain patch almost as well as backdoored ones are by their
trigger (benchmarks/scan_zoo.py: full-width ResNet-18s of two epochs reach 0.997-0.999 mean cosine from
a solid-colour start). On the zoo's convnets the two kinds differ in where the stamped images land and in
what the pattern needs to do it:
- a trigger sends them far outside the clean embeddings (BadEncoder's and DRUPE's cosine losses leave the
  embedding's scale free, and the trigger's features swamp the image's): the mean stamped embedding lies
  many per-dimension standard deviations from the clean mean (`offset`), where a fragile encoder's stays
  among its clean embeddings;
- a trigger hinges on its pixels: blurring the pattern undoes most of the collapse, where a fragile
  encoder's smooth pattern keeps it (`blur_kept`, the share of the log residual a blurred pattern keeps).
The verdict counts a deep collapse (the collapse gap) only when either cue says trigger; a window that stands
out from the encoder's others counts whatever the cues say (see `windows.window_score`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from encoder_clean.encoders.base import Encoder
from encoder_clean.runtime import autocast
from encoder_clean.scan.invert import mean_pairwise_cosine


def blurred(pattern: Tensor, mask: Tensor) -> Tensor:
    """The window's pattern under a box blur of 3 px at 32 px (scaled with the image), averaging only pixels
    inside the window, so the window's edge is not darkened by the zeros around it. (C, H, W) -> (C, H, W)."""
    side = 2 * max(1, round(mask.shape[-1] / 32)) + 1
    kernel = torch.ones((1, 1, side, side), device=mask.device) / side ** 2

    def box(x: Tensor) -> Tensor:
        return F.conv2d(x[:, None], kernel, padding=side // 2)[:, 0]

    return box(pattern * mask) / box(mask).clamp_min(1e-6) * mask


def offset(stamped: Tensor, clean: Tensor) -> float:
    """How far the mean stamped embedding lies from the mean clean one, in the clean embeddings' standard
    deviations per dimension (root mean square over dimensions). (N, D), (M, D) -> float."""
    spread = clean.std(0).clamp_min(1e-6)
    return float(((stamped.mean(0) - clean.mean(0)) / spread).square().mean().sqrt())


def blur_kept(blurred_residual: float, residual: float, clean_residual: float) -> float:
    """The share of the window's collapse (its log residual below the clean one) that the blurred pattern
    keeps: 1 when blurring changes nothing, 0 when it undoes the collapse."""
    depth = clean_residual - residual
    return (clean_residual - blurred_residual) / depth if depth > 0 else 1.0


def log_residual(features: Tensor) -> Tensor:
    """log(1 - mean pairwise cosine) of (..., N, D) features: how far they are from one embedding."""
    return torch.log((1 - mean_pairwise_cosine(features)).clamp_min(1e-6))


@torch.no_grad()
def cues(encoder: Encoder, images: Tensor, clean: Tensor, stamped: Tensor, mask: Tensor,
         pattern: Tensor) -> tuple[float, float]:
    """A window's cues on float `images`, given their clean embeddings and their embeddings stamped with the
    window's `pattern` (both already computed by the caller): (offset, blur kept). One forward pass, of the
    blurred stamp."""
    with autocast(images.device):
        smooth = encoder.features((1 - mask) * images + blurred(pattern, mask)).float()
    return offset(stamped, clean), blur_kept(float(log_residual(smooth)), float(log_residual(stamped)),
                                             float(log_residual(clean)))
