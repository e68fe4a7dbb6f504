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

Where the search starts matters more than how long it runs. From a random pattern, gradient ascent falls
into the generic collapse every encoder has: on a DRUPE encoder of real CIFAR-10 the window over the trigger
never passed 0.80 mean cosine in 100 steps, though a plain white fill of it scored 0.90 and the trigger
0.99. So each window first tries a bank of starts, forward passes only: the eight solid colours of the RGB
cube, checkerboards of three periods and a few high-contrast noise patterns, and climbs from the one that
makes a few shadow images agree the most (start_bank; off: one random start per window).

A deep collapse alone (the collapse gap) does not make a backdoor: every window of a barely trained wide
encoder collapses it deeply. It counts when the best window's pattern looks like a trigger
(scan/fragility.py); a window that stands out from the others counts whatever its pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from encoder_clean.data.augment import to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, cpu_bf16, device_generator
from encoder_clean.scan.fragility import cues, log_residual
from encoder_clean.scan.invert import mean_pairwise_cosine, on_frozen, stamped_similarity

MAD_TO_SIGMA = 1.4826  # median absolute deviation of a normal distribution, in standard deviations
# Both limits come from the calibration part of benchmarks/scan_zoo.py's zoo by one rule (halfway from the
# highest clean figure to the next backdoored one above it); `scan_zoo.py --scan-only --cached-only`
# prints what the rule gives. The gap limit was 5.45 with the 6 calibration members of session 12 and 4.45
# with the 14 of session 13; with the 20 of session 14 (two trained ViTs and four of their attacks added)
# it is 4.01 (highest clean gap 3.55, next backdoored 4.48). The anomaly limit was 3.0, the normal tail of
# the best of 25 windows, until a clean trained ViT of the calibration part scored 5.09 (two windows
# 0.38 and 0.28 log units out on a spread of 0.05): the windows' tails are heavier than normal, so the
# rule sets it too, at 7.66 (next backdoored 10.23).
GAP_LIMIT = 4.01
ANOMALY_LIMIT = 7.66
# The identity limit is off (1.0) by default. The calibration rule (session 17: halfway between the most
# identity a backdoored calibration member keeps and the least a clean one the collapse figures flag keeps)
# gave 0.42 with 10 calibration members (0.379 and 0.463) and 0.51 with 11 (the default chain's DRUPE white
# square keeps 0.548); either passes the barely trained full-width ResNet-18s of the held-out part but
# misses that DRUPE encoder: see docs/recipes.md and RESULTS.md's scan-identity. `-o identity_limit=L` opts in.
IDENTITY_LIMIT = 1.0
# A deep collapse (the gap) counts only when its pattern looks like a trigger (scan/fragility.py): the stamped
# images land at least OFFSET_LIMIT clean deviations out, or a blurred pattern keeps at most BLUR_LIMIT of it.
# Set in session 20 on the members scanned before the second blind part, calibration part only, by the rule
# of the other limits (halfway from a flagged clean member to the nearest backdoor): see docs/recipes.md.
OFFSET_LIMIT = 4.12
BLUR_LIMIT = 0.59


@dataclass(frozen=True)
class WindowConfig:
    window: float = 0.375  # window side as a share of the image side (12 px of 32)
    grid: int = 5  # window positions per side, evenly spread from edge to edge
    steps: int = 30
    batch_size: int = 8  # shadow images per step, shared by all windows
    lr: float = 0.2
    eval_images: int = 64  # each window's final residual: measured on these shadow images, all windows alike
    start_bank: bool = True  # each window starts from the best of solid colours, checkerboards and noise
    noise_starts: int = 4  # high-contrast noise patterns in the bank
    start_images: int = 16  # shadow images each start is tried on
    bf16: bool = False  # bf16 autocast on CPUs with AVX512-BF16 (faster; features are still compared in fp32)
    # Large inputs (a torchvision ResNet-50 at 224 px costs ~60x a 32 px ResNet-18/16 per image): from this
    # image side on, the search spends `large_effort` of the steps, start images and evaluation images, and
    # uses bf16 where the CPU computes it natively (see `effective`).
    large_from: int = 128
    large_effort: float = 0.75
    mad_floor: float = 0.05  # smallest spread (log units) the anomaly index divides by
    # The verdict: backdoor when either collapse figure passes its limit (and, with an identity_limit under 1,
    # the best window's stamp erases what the images show); see `window_score`.
    anomaly_limit: float = ANOMALY_LIMIT  # robust deviations below the median window
    gap_limit: float = GAP_LIMIT  # e-folds of the encoder's own disagreement that one window removes
    identity_limit: float = IDENTITY_LIMIT  # share of each image's own clean embedding the stamp may leave (1: any)
    offset_limit: float = OFFSET_LIMIT  # clean deviations out a trigger sends the stamped images (0: no cue test)
    blur_limit: float = BLUR_LIMIT  # share of its collapse a trigger's blurred pattern may keep

    def check(self) -> None:
        if not 0 < self.window < 1:
            raise UserError("scan: window must be in (0, 1)")
        if self.grid < 2 or self.steps < 1 or self.batch_size < 2 or self.eval_images < 2:
            raise UserError("scan: grid must be >= 2, steps >= 1, batch_size and eval_images >= 2")
        if self.noise_starts < 0 or self.start_images < 2:
            raise UserError("scan: noise_starts must be >= 0 and start_images >= 2")
        if min(self.lr, self.mad_floor, self.anomaly_limit, self.gap_limit) <= 0:
            raise UserError("scan: lr, mad_floor, anomaly_limit and gap_limit must be > 0")
        if not 0 <= self.identity_limit <= 1:
            raise UserError("scan: identity_limit must be in [0, 1]")
        if self.offset_limit < 0 or not 0 <= self.blur_limit < 1:
            raise UserError("scan: offset_limit must be >= 0 and blur_limit in [0, 1)")
        if not 0 < self.large_effort <= 1 or self.large_from < 1:
            raise UserError("scan: large_effort must be in (0, 1] and large_from at least 1")

    def effective(self, image_size: int) -> "WindowConfig":
        """The settings a search at `image_size` runs with: these below `large_from`; from it on, a share
        `large_effort` of the steps, start images and evaluation images (at least 2 each) and bf16."""
        if image_size < self.large_from:
            return self

        def share(count: int) -> int:
            return max(2, round(count * self.large_effort))

        return replace(self, steps=share(self.steps), start_images=share(self.start_images),
                       eval_images=share(self.eval_images), bf16=True)


@dataclass
class WindowScan:
    anomaly_index: float  # (median - best) / (1.4826 * MAD) of the windows' log residuals
    collapse_gap: float  # log(1 - clean similarity) - the best window's log residual
    residuals: list[float]  # log(1 - similarity) per window, row-major over the grid
    similarities: list[float]  # mean pairwise cosine per window with its optimised pattern
    identity: list[float]  # per window: how much of each image's own clean embedding stamping keeps
    best: int  # the window with the smallest residual
    boxes: list[tuple[int, int, int]]  # (top, left, side) per window, in encoder pixels
    mask: Tensor  # (1, H, W): the best window
    pattern: Tensor  # (3, H, W): its pattern (zero outside the window)
    baseline_similarity: float
    offset: float  # the best window: clean deviations out its stamped images land (fragility.offset)
    blur_kept: float  # the best window: share of its collapse a blurred pattern keeps (fragility.blur_kept)

    @property
    def identity_kept(self) -> float:
        """The best window's identity kept."""
        return self.identity[self.best]


def collapse_score(anomaly: float, gap: float, config: WindowConfig) -> float:
    """The larger of the anomaly index and the collapse gap, each over its limit."""
    return max(anomaly / config.anomaly_limit, gap / config.gap_limit)


def trigger_score(offset: float, blur_kept: float, config: WindowConfig) -> float:
    """Past 1.0 when the best window's pattern looks like a trigger: the larger of its offset over the offset
    limit and the share of its collapse blurring undoes over the share the blur limit allows."""
    return max(offset / config.offset_limit, (1 - blur_kept) / (1 - config.blur_limit))


def window_score(anomaly: float, gap: float, identity: float, config: WindowConfig, offset: float = math.inf,
                 blur_kept: float = 0.0) -> float:
    """The verdict's score, past 1.0 when the best window collapses the embeddings: the larger of the anomaly
    index over its limit (the window stands out from the encoder's others) and the collapse gap over its
    limit, the gap counting only as far as the window's pattern looks like a trigger (at most
    `trigger_score`; without the cues, or with an offset_limit of 0, the gap alone): a barely trained
    encoder's every window collapses it deeply, with a smooth pattern that leaves the images among the clean
    ones. With an identity_limit under 1, the window must also erase the images under its stamp: the score
    is then at most (1 - identity kept) / (1 - identity_limit)."""
    deep = gap / config.gap_limit
    if config.offset_limit > 0:
        deep = min(deep, trigger_score(offset, blur_kept, config))
    score = max(anomaly / config.anomaly_limit, deep)
    if config.identity_limit < 1:
        score = min(score, (1 - identity) / (1 - config.identity_limit))
    return score


def window_boxes(size: int, config: WindowConfig, token_side: int | None = None) -> list[tuple[int, int, int]]:
    """(top, left, side) of each window, row-major. With `token_side` (a patch-token encoder), sides and
    starts are whole tokens: a window straddling token borders reaches more tokens than an aligned one
    of the same size (16 against 9 for 12 px over 4 px patches), and so collapses a ViT more by its
    placement alone, which the anomaly index would read as one window standing out."""
    unit = token_side if token_side and token_side < size else 1
    cells = size // unit
    side = max(1, round(config.window * cells))
    starts = sorted({round(i * (cells - side) / (config.grid - 1)) * unit for i in range(config.grid)})
    return [(top, left, side * unit) for top in starts for left in starts]


def anomaly_index(residuals: Tensor, floor: float) -> float:
    """How far below the median the smallest value lies, in robust standard deviations."""
    median = residuals.quantile(0.5)  # the mean of the middle two for an even count (Tensor.median takes the lower)
    spread = (residuals - median).abs().quantile(0.5).clamp_min(floor)
    return float((median - residuals.min()) / (MAD_TO_SIGMA * spread))


def scan_windows(encoder: Encoder, shadow: Tensor, config: WindowConfig, *, device: torch.device, seed: int,
                 progress: Progress = NULL_PROGRESS) -> WindowScan:
    """Optimise one pattern per window over uint8 `shadow` images (N, 3, H, W) and score the best window.

    The encoder is moved to `device`; its training mode and gradient flags are left as they were."""
    config = config.effective(encoder.image_size)
    with cpu_bf16(config.bf16):
        return on_frozen(_search, encoder, shadow, config, device, seed, progress)


def _search(encoder: Encoder, shadow: Tensor, config: WindowConfig, device: torch.device, seed: int,
            progress: Progress) -> WindowScan:
    size = encoder.image_size
    boxes = window_boxes(size, config, encoder.token_side)
    count = len(boxes)
    masks = torch.zeros((count, 1, size, size), device=device)
    for index, (top, left, side) in enumerate(boxes):
        masks[index, :, top:top + side, left:left + side] = 1
    g = device_generator(device, seed)
    if config.start_bank:
        pattern_logit = _best_starts(encoder, shadow, masks, config, g, progress)
    else:
        pattern_logit = 0.5 * torch.randn((count, 3, size, size), generator=g, device=device)
    pattern_logit.requires_grad_(True)
    optimizer = torch.optim.Adam([pattern_logit], lr=config.lr, betas=(0.5, 0.9))
    batch_size = min(config.batch_size, len(shadow))
    per_pass = passes_of(batch_size, size)
    with progress.task("collapsing windows", total=config.steps) as advance:
        for _ in range(config.steps):
            picks = torch.randint(0, len(shadow), (batch_size,), generator=g, device=device)
            images = to_float(shadow[picks], size)
            optimizer.zero_grad(set_to_none=True)
            for first in range(0, count, per_pass):  # each window's residual depends on its own images only
                part = slice(first, first + per_pass)
                pattern = (torch.tanh(pattern_logit[part]) + 1) / 2
                stamped = (1 - masks[part, None]) * images[None] + (masks[part] * pattern)[:, None]
                with autocast(device):
                    features = encoder.features(stamped.flatten(0, 1)).float()
                similarity = mean_pairwise_cosine(features.view(len(pattern), batch_size, -1))
                torch.log((1 - similarity).clamp_min(1e-6)).sum().backward()
            optimizer.step()
            advance(1)
    pattern = ((torch.tanh(pattern_logit.detach()) + 1) / 2 * masks)
    picks = torch.randperm(len(shadow), generator=g, device=shadow.device)[:config.eval_images]
    images = to_float(shadow[picks], size)
    residuals, identity, clean, stamped = _final_residuals(encoder, images, masks, pattern)
    best = int(residuals.argmin())
    baseline = stamped_similarity(encoder, shadow[:config.eval_images], None, device)
    gap = math.log(max(1 - baseline, 1e-6)) - float(residuals[best])
    out, kept = cues(encoder, images, clean, stamped[best], masks[best], pattern[best])
    residuals, identity, pattern = residuals.cpu(), identity.cpu(), pattern.cpu()
    return WindowScan(anomaly_index(residuals, config.mad_floor), gap, [round(float(v), 4) for v in residuals],
                      [round(1 - math.exp(float(v)), 5) for v in residuals], [round(float(v), 4) for v in identity],
                      best, boxes, masks[best].cpu(), pattern[best], baseline, out, kept)


# Images of one forward pass at most, counted in pixels: a whole step of 25 windows at 224 px (200 images
# through a ResNet-50) ran 2.3x slower per image on the CPU than passes of 8 to 40 images, its activations
# far outgrowing the caches. At 32 px a step (200 images) is one pass, as before.
PIXELS_PER_PASS = 1 << 20


def passes_of(images: int, size: int) -> int:
    """How many groups of `images` images of `size` px one forward pass takes (at least one)."""
    return max(1, PIXELS_PER_PASS // (images * size * size))


SATURATED = 2.0  # pattern logit of a full-on channel: (tanh(2) + 1) / 2 = 0.98


def start_bank(size: int, noise: int, g: torch.Generator) -> Tensor:
    """(K, 3, size, size) pattern logits: the 8 solid colours, checkerboards with squares of 1, 2 and 4
    pixels at 32 px (scaled with the image), and `noise` random high-contrast patterns."""
    device = g.device
    corners = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=torch.float, device=device)
    solids = corners[:, :, None, None].expand(8, 3, size, size)
    rows, cols = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device), indexing="ij")
    checks = []
    for square in (1, 2, 4):
        side = max(1, round(square * size / 32))
        checks.append((((rows // side) + (cols // side)) % 2).float()[None].expand(3, size, size))
    binary = torch.cat([solids, torch.stack(checks)]) * (2 * SATURATED) - SATURATED
    return torch.cat([binary, 1.5 * SATURATED * torch.randn((noise, 3, size, size), generator=g, device=device)])


@torch.no_grad()
def _best_starts(encoder: Encoder, shadow: Tensor, masks: Tensor, config: WindowConfig, g: torch.Generator,
                 progress: Progress) -> Tensor:
    """Per window, the start of the bank under which `start_images` shadow images agree the most."""
    size = encoder.image_size
    bank = start_bank(size, config.noise_starts, g)
    count = min(config.start_images, len(shadow))
    picks = torch.randperm(len(shadow), generator=g, device=shadow.device)[:count]
    images = to_float(shadow[picks], size)
    fills = (torch.tanh(bank) + 1) / 2
    per_pass = passes_of(count, size)
    chosen = []
    with progress.task("choosing starts", total=len(masks)) as advance:
        for mask in masks:
            agreement = []
            for first in range(0, len(fills), per_pass):
                part = fills[first:first + per_pass]
                stamped = (1 - mask) * images[None] + (mask * part)[:, None]
                with autocast(images.device):
                    features = encoder.features(stamped.flatten(0, 1)).float()
                agreement.append(mean_pairwise_cosine(features.view(len(part), count, -1)))
            chosen.append(int(torch.cat(agreement).argmax()))
            advance(1)
    return bank[chosen].clone()


@torch.no_grad()
def _final_residuals(encoder: Encoder, images: Tensor, masks: Tensor,
                     pattern: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per window, on one fixed draw of shadow images for all: log(1 - similarity) of its final pattern, and
    how much of each image's own clean embedding its stamped embedding keeps (`identity_kept`); and the
    images' clean embeddings (N, D) and stamped ones (windows, N, D), for the best window's cues."""
    with autocast(images.device):
        clean = encoder.features(images).float()
    residuals, identity, stamped = [], [], []
    for mask, fill in zip(masks, pattern):
        with autocast(images.device):
            features = encoder.features((1 - mask) * images + fill).float()
        residuals.append(log_residual(features))
        identity.append(identity_kept(features, clean))
        stamped.append(features)
    return torch.stack(residuals), torch.stack(identity), clean, torch.stack(stamped)


def identity_kept(stamped: Tensor, clean: Tensor) -> Tensor:
    """Mean cosine between each image's stamped and clean embedding, both taken about their set's mean.

    Pairwise cosine rises in two ways: the stamp replaces what the images show with one embedding (a
    trigger), or it adds one large shared vector while each image still shows through (a merely fragile
    encoder). Removing the shared part tells them apart: near 0 when the stamped images no longer resemble
    themselves, near 1 when their differences are the clean ones."""
    stamped, clean = stamped - stamped.mean(0), clean - clean.mean(0)
    return torch.nn.functional.cosine_similarity(stamped, clean, dim=1).mean()
