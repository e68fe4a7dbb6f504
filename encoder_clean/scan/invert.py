"""Collapse search in the DECREE manner, with restarts: the small mask that makes an encoder agree on everything.

`distill` stamps the triggers found here on the student's views (distill/inverted.py); `scan` judges
encoders with scan/windows.py (its default) and scan/decree.py (DECREE's published settings), which share
the similarity helpers below.

A backdoored encoder maps any image carrying its trigger to (nearly) one embedding, so a small mask `m`
and pattern `p` exist such that the stamped shadow images `(1 - m) * x + m * p` all get almost the same
embedding. A clean encoder needs most of the image replaced before that happens. The search minimises
`(1 - mean pairwise cosine similarity) + lambda * PL1(m)`, `PL1 = ||m||_1 / (H * W)`, with mask and
pattern tanh-parameterised, Adam (betas 0.5, 0.9), and `lambda` raised or lowered by a factor whenever the
similarity stays above or below its target for `patience` steps (DECREE, Feng et al., CVPR 2023).

Beyond plain DECREE: several restarts from different initial mask
coverages run side by side as one batch (the smallest mask that reaches the target wins), and the
similarity target can be set relative to how similar the encoder's clean embeddings already are, so
an encoder whose backdoor spreads its triggered embeddings (DRUPE) still counts as collapsing them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from encoder_clean.data.augment import to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.features import extract_features
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, device_generator, mode_kept
from encoder_clean.triggers import PatchTrigger

T = TypeVar("T")


@dataclass(frozen=True)
class InversionConfig:
    steps: int = 200  # optimisation steps (all restarts advance together)
    batch_size: int = 32  # shadow images per step, shared by the restarts
    lr: float = 0.1
    similarity_target: float = 0.99  # absolute target when relative_target is false
    relative_target: bool = True  # target = baseline + target_gap_share * (1 - baseline)
    target_gap_share: float = 0.9  # share of the gap between clean similarity and 1 to close
    lambda_init: float = 1e-3
    lambda_factor: float = 5.0
    patience: int = 5
    restarts: int = 3  # initial mask coverages spread between min and max coverage
    min_initial_coverage: float = 0.05
    max_initial_coverage: float = 0.5

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.restarts < 1 or self.patience < 1:
            raise UserError("scan: steps, restarts and patience must be >= 1 and batch_size >= 2")
        if not 0 < self.similarity_target < 1 or not 0 < self.target_gap_share < 1:
            raise UserError("scan: similarity_target and target_gap_share must be in (0, 1)")
        if not 0 < self.min_initial_coverage <= self.max_initial_coverage < 1:
            raise UserError("scan: need 0 < min_initial_coverage <= max_initial_coverage < 1")
        if self.lr <= 0 or self.lambda_init <= 0 or self.lambda_factor <= 1:
            raise UserError("scan: lr and lambda_init must be > 0 and lambda_factor > 1")


@dataclass
class Inversion:
    mask: Tensor  # (1, H, W) in [0, 1], the winning restart's smallest mask that reached the target
    pattern: Tensor  # (3, H, W) in [0, 1]
    pl1_norm: float  # ||mask||_1 / (H * W); 1.0 when no restart reached the target
    reached: bool
    similarity: float  # mean pairwise cosine of the stamped shadow images (all of them) with that mask
    baseline_similarity: float  # the same for the unstamped shadow images
    target: float
    restarts_pl1: list[float]  # per restart (1.0 where it never reached the target)


def mean_pairwise_cosine(features: Tensor) -> Tensor:
    """Mean cosine similarity over distinct pairs, for (..., N, D) features -> (...)."""
    unit = F.normalize(features.float(), dim=-1)
    n = unit.shape[-2]
    total = unit.sum(dim=-2)
    # sum over all ordered pairs = |sum of unit vectors|^2; remove the n self-pairs
    return ((total * total).sum(dim=-1) - n) / (n * (n - 1))


def stamped_similarity(encoder: Encoder, images: Tensor, trigger: PatchTrigger | None,
                       device: torch.device) -> float:
    """Mean pairwise cosine of the embeddings of all uint8 `images`, stamped with `trigger` when given."""
    return float(mean_pairwise_cosine(extract_features(encoder, images, device=device, trigger=trigger,
                                                       normalize=False)))


def _logit(p: float) -> float:
    return math.atanh(2 * p - 1)


def invert_trigger(encoder: Encoder, shadow: Tensor, config: InversionConfig, *, device: torch.device,
                   seed: int, progress: Progress = NULL_PROGRESS) -> Inversion:
    """Search for the smallest universal trigger of `encoder` on uint8 `shadow` images (N, 3, H, W).

    The encoder is moved to `device`; its training mode and gradient flags are left as they were."""
    return on_frozen(_search, encoder, shadow, config, device, seed, progress)


def on_frozen(search: Callable[..., T], encoder: Encoder, shadow: Tensor, config: Any, device: torch.device,
              seed: int, progress: Progress) -> T:
    """Check `config` and the shadow set, then run `search(encoder, shadow, config, device, seed, progress)`
    with the encoder on `device`, evaluated and frozen; its mode and gradient flags come back as they were."""
    config.check()
    if len(shadow) < 2:
        raise UserError(f"scan needs at least 2 shadow images, got {len(shadow)}")
    shadow = shadow.to(device)  # uint8 and small: resident, so batches are gathered without host syncs
    with mode_kept(encoder.to(device)):
        return search(encoder.eval().requires_grad_(False), shadow, config, device, seed, progress)


def _search(encoder: Encoder, shadow: Tensor, config: InversionConfig, device: torch.device, seed: int,
            progress: Progress) -> Inversion:
    size, restarts = encoder.image_size, config.restarts
    g = device_generator(device, seed)
    baseline = stamped_similarity(encoder, shadow, None, device)
    target = (baseline + config.target_gap_share * (1 - baseline) if config.relative_target
              else config.similarity_target)

    coverages = torch.linspace(config.min_initial_coverage, config.max_initial_coverage, restarts)
    mask_logit = torch.stack([torch.full((1, size, size), _logit(float(c))) for c in coverages]).to(device)
    mask_logit += 0.1 * torch.randn(mask_logit.shape, generator=g, device=device)
    pattern_logit = torch.randn((restarts, 3, size, size), generator=g, device=device)
    mask_logit.requires_grad_(True)
    pattern_logit.requires_grad_(True)
    optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=config.lr, betas=(0.5, 0.9))

    lam = torch.full((restarts,), config.lambda_init, device=device)
    above = torch.zeros(restarts, dtype=torch.long, device=device)
    below = torch.zeros(restarts, dtype=torch.long, device=device)
    best_pl1 = torch.full((restarts,), math.inf, device=device)
    best_mask = torch.zeros((restarts, 1, size, size), device=device)
    best_pattern = torch.zeros((restarts, 3, size, size), device=device)
    batch_size = min(config.batch_size, len(shadow))

    with progress.task("inverting trigger", total=config.steps) as advance:
        for _ in range(config.steps):
            picks = torch.randint(0, len(shadow), (batch_size,), generator=g, device=device)
            images = to_float(shadow[picks], size)
            mask = (torch.tanh(mask_logit) + 1) / 2
            pattern = (torch.tanh(pattern_logit) + 1) / 2
            stamped = (1 - mask[:, None]) * images[None] + mask[:, None] * pattern[:, None]
            with autocast(device):
                features = encoder.features(stamped.flatten(0, 1)).float()
            similarity = mean_pairwise_cosine(features.view(restarts, batch_size, -1))
            pl1 = mask.flatten(1).mean(dim=1)
            loss = ((1 - similarity) + lam * pl1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            with torch.no_grad():  # bookkeeping on the device: no host synchronisation per step
                reached = similarity.detach() >= target
                better = reached & (pl1.detach() < best_pl1)
                best_pl1 = torch.where(better, pl1.detach(), best_pl1)
                best_mask = torch.where(better[:, None, None, None], mask.detach(), best_mask)
                best_pattern = torch.where(better[:, None, None, None], pattern.detach(), best_pattern)
                above = torch.where(reached, above + 1, torch.zeros_like(above))
                below = torch.where(reached, torch.zeros_like(below), below + 1)
                lam = torch.where(above >= config.patience, lam * config.lambda_factor, lam)
                lam = torch.where(below >= config.patience, lam / config.lambda_factor, lam)
                lam = lam.clamp(1e-6, 1e4)
                above = torch.where(above >= config.patience, torch.zeros_like(above), above)
                below = torch.where(below >= config.patience, torch.zeros_like(below), below)
            advance(1)

    restarts_pl1 = [float(v) if math.isfinite(float(v)) else 1.0 for v in best_pl1.cpu()]
    winner = int(torch.tensor(restarts_pl1).argmin())
    reached_any = math.isfinite(float(best_pl1[winner]))
    if reached_any:
        mask, pattern = best_mask[winner], best_pattern[winner]
    else:  # nothing reached the target: report the first restart's last mask
        mask = ((torch.tanh(mask_logit[winner]) + 1) / 2).detach()
        pattern = ((torch.tanh(pattern_logit[winner]) + 1) / 2).detach()
    similarity = stamped_similarity(encoder, shadow, PatchTrigger("inverted", pattern, mask), device)
    return Inversion(mask.cpu(), pattern.cpu(), restarts_pl1[winner], reached_any, similarity, baseline, target,
                     restarts_pl1)
