"""Window collapse: is there one place in the image where a small patch collapses the embeddings far
more than anywhere else?

A patch backdoor ties the encoder's embedding to a pattern at one place: stamping that pattern sends every
image to (nearly) one embedding, and a few pixels less of it does much less (a 7x7 part of a 10x10 trigger
leaves most of the collapse undone). A clean encoder has universal adversarial patches too, but no place
where one is much stronger than at the others. So the scan puts a window of fixed size at each point of a
grid over the image, optimises one pattern per window (the window fully replaced, nothing else touched) to
make the stamped shadow images agree, and compares the windows of this encoder with each other: the score
is how far the best window's residual disagreement `log(1 - mean pairwise cosine)` lies below the median
window's, in units of the windows' median absolute deviation (Neural Cleanse's anomaly index, as
SSL-Cleanse uses it over an encoder's own clusters). The reference is the encoder itself, not a
distribution of other encoders, so the threshold does not move with architecture, data or training length.

All windows advance together as one batch; the log-residual objective keeps pushing where the cosine is
already close to 1, which is where a backdoor and a merely fragile encoder differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from encoder_clean.data.augment import to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, cpu_bf16, device_generator
from encoder_clean.scan.invert import mean_pairwise_cosine, on_frozen, stamped_similarity

MAD_TO_SIGMA = 1.4826  # median absolute deviation of a normal distribution, in standard deviations


@dataclass(frozen=True)
class WindowConfig:
    window: float = 0.375  # window side as a share of the image side (12 px of 32)
    grid: int = 5  # window positions per side, evenly spread from edge to edge
    steps: int = 30
    batch_size: int = 8  # shadow images per step, shared by all windows
    lr: float = 0.2
    eval_images: int = 64  # each window's final residual: measured on these shadow images, all windows alike
    bf16: bool = False  # bf16 autocast on CPUs with AVX512-BF16 (faster; features are still compared in fp32)
    mad_floor: float = 0.05  # smallest spread (log units) the anomaly index divides by

    def check(self) -> None:
        if not 0 < self.window < 1:
            raise UserError("scan: window must be in (0, 1)")
        if self.grid < 2 or self.steps < 1 or self.batch_size < 2 or self.eval_images < 2:
            raise UserError("scan: grid must be >= 2, steps >= 1, batch_size and eval_images >= 2")
        if self.lr <= 0 or self.mad_floor <= 0:
            raise UserError("scan: lr and mad_floor must be > 0")


@dataclass
class WindowScan:
    anomaly_index: float  # (median - best) / (1.4826 * MAD) of the windows' log residuals
    residuals: list[float]  # log(1 - similarity) per window, row-major over the grid
    similarities: list[float]  # mean pairwise cosine per window with its optimised pattern
    best: int  # the window with the smallest residual
    boxes: list[tuple[int, int, int]]  # (top, left, side) per window, in encoder pixels
    mask: Tensor  # (1, H, W): the best window
    pattern: Tensor  # (3, H, W): its pattern (zero outside the window)
    baseline_similarity: float


def window_boxes(size: int, config: WindowConfig) -> list[tuple[int, int, int]]:
    side = max(1, round(config.window * size))
    starts = sorted({round(i * (size - side) / (config.grid - 1)) for i in range(config.grid)})
    return [(top, left, side) for top in starts for left in starts]


def anomaly_index(residuals: Tensor, floor: float) -> float:
    """How far below the median the smallest value lies, in robust standard deviations."""
    median = residuals.quantile(0.5)  # the mean of the middle two for an even count (Tensor.median takes the lower)
    spread = (residuals - median).abs().quantile(0.5).clamp_min(floor)
    return float((median - residuals.min()) / (MAD_TO_SIGMA * spread))


def scan_windows(encoder: Encoder, shadow: Tensor, config: WindowConfig, *, device: torch.device, seed: int,
                 progress: Progress = NULL_PROGRESS) -> WindowScan:
    """Optimise one pattern per window over uint8 `shadow` images (N, 3, H, W) and score the best window.

    The encoder is moved to `device`; its training mode and gradient flags are left as they were."""
    with cpu_bf16(config.bf16):
        return on_frozen(_search, encoder, shadow, config, device, seed, progress)


def _search(encoder: Encoder, shadow: Tensor, config: WindowConfig, device: torch.device, seed: int,
            progress: Progress) -> WindowScan:
    size = encoder.image_size
    boxes = window_boxes(size, config)
    count = len(boxes)
    masks = torch.zeros((count, 1, size, size), device=device)
    for index, (top, left, side) in enumerate(boxes):
        masks[index, :, top:top + side, left:left + side] = 1
    g = device_generator(device, seed)
    pattern_logit = (0.5 * torch.randn((count, 3, size, size), generator=g, device=device)).requires_grad_(True)
    optimizer = torch.optim.Adam([pattern_logit], lr=config.lr, betas=(0.5, 0.9))
    batch_size = min(config.batch_size, len(shadow))
    with progress.task("collapsing windows", total=config.steps) as advance:
        for _ in range(config.steps):
            picks = torch.randint(0, len(shadow), (batch_size,), generator=g, device=device)
            images = to_float(shadow[picks], size)
            pattern = (torch.tanh(pattern_logit) + 1) / 2
            stamped = (1 - masks[:, None]) * images[None] + (masks * pattern)[:, None]
            with autocast(device):
                features = encoder.features(stamped.flatten(0, 1)).float()
            similarity = mean_pairwise_cosine(features.view(count, batch_size, -1))
            residual = torch.log((1 - similarity).clamp_min(1e-6))
            optimizer.zero_grad(set_to_none=True)
            residual.sum().backward()
            optimizer.step()
            advance(1)
    pattern = ((torch.tanh(pattern_logit.detach()) + 1) / 2 * masks)
    residuals = _final_residuals(encoder, shadow, masks, pattern, config, g).cpu()
    best = int(residuals.argmin())
    pattern = pattern.cpu()
    return WindowScan(anomaly_index(residuals, config.mad_floor), [round(float(v), 4) for v in residuals],
                      [round(1 - math.exp(float(v)), 5) for v in residuals], best, boxes, masks[best].cpu(),
                      pattern[best], stamped_similarity(encoder, shadow[:config.eval_images], None, device))


@torch.no_grad()
def _final_residuals(encoder: Encoder, shadow: Tensor, masks: Tensor, pattern: Tensor, config: WindowConfig,
                     g: torch.Generator) -> Tensor:
    """log(1 - similarity) of each window's final pattern, on one fixed draw of shadow images for all."""
    picks = torch.randperm(len(shadow), generator=g, device=shadow.device)[:config.eval_images]
    images = to_float(shadow[picks], encoder.image_size)
    residuals = []
    for mask, fill in zip(masks, pattern):
        with autocast(images.device):
            features = encoder.features((1 - mask) * images + fill).float()
        residuals.append(torch.log((1 - mean_pairwise_cosine(features)).clamp_min(1e-6)))
    return torch.stack(residuals)
