"""Trigger inversion with DECREE's published settings: the smallest mask that makes an encoder agree on everything.

A backdoored encoder maps any image carrying its trigger to (nearly) one embedding, so a small mask `m`
and pattern `p` exist such that the stamped shadow images `(1 - m) * x + m * p` all get almost the same
embedding. A clean encoder needs most of the image replaced before that happens. The search minimises
`(1 - mean pairwise cosine similarity) + lambda * ||m||_1` with the L1 norm summed over the mask's
(H, W, 3) entries, mask and pattern tanh-parameterised, with the settings of DECREE's public launcher
(Feng et al., CVPR 2023): Adam (betas 0.5, 0.9), batch 128, lr 0.5 lowered to 0.1 after epoch 30 and
0.05 after epoch 50, lambda from 1e-3 multiplied or divided by 5 after more than 5 consecutive epochs
above or below the 0.99 target (capped at 1e5), success judged on the epoch's mean similarity over the
whole shadow set, and a stop after 10 epochs without a smaller successful mask. The score is the
PL1-norm `||m||_1 / (H * W)` of the smallest successful mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from encoder_clean.data.augment import to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, device_generator
from encoder_clean.scan.invert import mean_pairwise_cosine, on_frozen, stamped_similarity


@dataclass(frozen=True)
class DecreeConfig:
    max_epochs: int = 80  # passes over the shadow set; the early stop usually ends the search sooner
    batch_size: int = 128
    lr: float = 0.5
    lr_mid: float = 0.1
    lr_mid_epoch: int = 30  # lr_mid from this epoch on
    lr_late: float = 0.05
    lr_late_epoch: int = 50
    similarity_target: float = 0.99
    lambda_init: float = 1e-3
    lambda_factor: float = 5.0
    lambda_max: float = 1e5
    patience: int = 5  # lambda moves after more than this many consecutive epochs on one side of the target
    early_stop: int = 10  # epochs without a smaller successful mask, once one succeeded
    initial_coverage: float = 0.5

    def check(self) -> None:
        if self.max_epochs < 1 or self.batch_size < 2 or self.patience < 1 or self.early_stop < 1:
            raise UserError("scan: max_epochs, patience and early_stop must be >= 1 and batch_size >= 2")
        if not 0 < self.similarity_target < 1 or not 0 < self.initial_coverage < 1:
            raise UserError("scan: similarity_target and initial_coverage must be in (0, 1)")
        if min(self.lr, self.lr_mid, self.lr_late, self.lambda_init) <= 0 or self.lambda_factor <= 1:
            raise UserError("scan: learning rates and lambda_init must be > 0 and lambda_factor > 1")

    def lr_at(self, epoch: int) -> float:
        return self.lr_late if epoch >= self.lr_late_epoch else self.lr_mid if epoch >= self.lr_mid_epoch else self.lr


@dataclass
class DecreeInversion:
    mask: Tensor  # (1, H, W) in [0, 1]: the smallest mask that reached the target (else the last one)
    pattern: Tensor  # (3, H, W) in [0, 1]
    pl1_norm: float  # ||mask||_1 / (H * W); 1.0 when no epoch reached the target
    reached: bool
    similarity: float  # the epoch-mean similarity of that mask over the whole shadow set
    baseline_similarity: float  # the same for the unstamped shadow images
    target: float
    epochs: int


def decree_invert(encoder: Encoder, shadow: Tensor, config: DecreeConfig, *, device: torch.device,
                  seed: int, progress: Progress = NULL_PROGRESS) -> DecreeInversion:
    """Search for the smallest universal trigger of `encoder` on uint8 `shadow` images (N, 3, H, W).

    The encoder is moved to `device`; its training mode and gradient flags are left as they were."""
    return on_frozen(_search, encoder, shadow, config, device, seed, progress)


def _search(encoder: Encoder, shadow: Tensor, config: DecreeConfig, device: torch.device, seed: int,
            progress: Progress) -> DecreeInversion:
    size = encoder.image_size
    g = device_generator(device, seed)
    baseline = stamped_similarity(encoder, shadow, None, device)
    mask_logit = torch.full((1, size, size), math.atanh(2 * config.initial_coverage - 1), device=device)
    mask_logit += 0.1 * torch.randn(mask_logit.shape, generator=g, device=device)
    pattern_logit = torch.randn((3, size, size), generator=g, device=device)
    mask_logit.requires_grad_(True)
    pattern_logit.requires_grad_(True)
    optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=config.lr, betas=(0.5, 0.9))
    lam, above, below, since_best = config.lambda_init, 0, 0, 0
    best_pl1, best_similarity = math.inf, 0.0
    best_mask = best_pattern = None
    batch_size = min(config.batch_size, len(shadow))
    epoch = 0
    with progress.task("inverting trigger", total=config.max_epochs) as advance:
        for epoch in range(1, config.max_epochs + 1):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(epoch - 1)
            order = torch.randperm(len(shadow), generator=g, device=device)
            weighted, seen = torch.zeros((), device=device), 0
            for start in range(0, len(shadow) - 1, batch_size):
                picks = order[start:start + batch_size]
                if len(picks) < 2:
                    break
                images = to_float(shadow[picks], size)
                mask = (torch.tanh(mask_logit) + 1) / 2
                pattern = (torch.tanh(pattern_logit) + 1) / 2
                with autocast(device):
                    features = encoder.features((1 - mask) * images + mask * pattern).float()
                similarity = mean_pairwise_cosine(features)
                loss = (1 - similarity) + lam * 3 * mask.sum()  # the (H, W, 3) mask's L1: 3 equal channels
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                weighted = weighted + similarity.detach() * len(picks)
                seen += len(picks)
            epoch_similarity = float(weighted) / seen
            with torch.no_grad():
                mask = (torch.tanh(mask_logit) + 1) / 2
                pl1 = float(mask.mean())
            reached = epoch_similarity >= config.similarity_target
            if reached and pl1 < best_pl1:
                best_pl1, best_similarity, since_best = pl1, epoch_similarity, 0
                best_mask, best_pattern = mask.detach().clone(), ((torch.tanh(pattern_logit) + 1) / 2).detach()
            elif best_mask is not None:
                since_best += 1
            above, below = (above + 1, 0) if reached else (0, below + 1)
            if above > config.patience:
                lam, above = min(lam * config.lambda_factor, config.lambda_max), 0
            elif below > config.patience:
                lam, below = lam / config.lambda_factor, 0
            advance(1)
            if since_best >= config.early_stop:
                break
    if best_mask is None:  # nothing reached the target: report the last mask, scored as no trigger found
        best_mask = ((torch.tanh(mask_logit) + 1) / 2).detach()
        best_pattern = ((torch.tanh(pattern_logit) + 1) / 2).detach()
        best_similarity = epoch_similarity
    reached_any = math.isfinite(best_pl1)
    return DecreeInversion(best_mask.cpu(), best_pattern.cpu(), best_pl1 if reached_any else 1.0, reached_any,
                     best_similarity, baseline, config.similarity_target, epoch)
