"""BYOL (Grill et al., NeurIPS 2020): the online network (encoder, projector, predictor) regresses the
projection that a target network, an exponential moving average of the online encoder and projector,
makes of the other view; no negatives.

Published settings (the defaults): the loss 2 - 2 cos(prediction, target projection), summed over both
orders of the two views, and the target's rate tau rising from 0.996 to 1 on a cosine schedule over the
run. The projector is the encoder's projection head; the predictor has the same layout
(Linear-BatchNorm-ReLU-Linear, as in the paper) at the head's own widths. `predictor=direct` replaces
it with DirectPred's linear predictor, set each step from the projections' correlation instead of trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.encoders.base import Encoder, ProjectionHead
from encoder_clean.errors import UserError
from encoder_clean.parallel import all_reduce_sum
from encoder_clean.pretrain.momentum import momentum_copy, momentum_update
from encoder_clean.pretrain.registry import Method, Objective, Schedule, register_method
from encoder_clean.runtime import autocast


@dataclass(frozen=True)
class ByolSettings:
    tau: float = 0.996  # the target's rate at the first step; it rises to 1 at the last
    # The predictor's learning rate as a multiple of the run's (1 in the paper). A predictor that adapts
    # faster than the encoder is what keeps non-contrastive training from collapsing in the analysis of
    # Tian, Chen & Ganguli (ICML 2021, "Understanding self-supervised learning dynamics without
    # contrastive pairs"); SimSiam (Chen & He, CVPR 2021) likewise trains its predictor without decay.
    predictor_lr: float = 1.0
    predictor: str = "mlp"  # or "direct": DirectPred (`DirectPredictor`), which has nothing to train
    direct_rho: float = 0.3  # DirectPred's averaging rate of the correlation (its paper's value)
    direct_eps: float = 0.1  # DirectPred's floor added to every eigenvalue's share (its paper's value)


class DirectPredictor(nn.Module):
    """DirectPred (Tian, Chen & Ganguli, ICML 2021): the predictor is the linear map U diag(p) U^T, where U
    and s are the eigenvectors and eigenvalues of a running average F of the online projections'
    correlation E[z z^T] (F = rho F + (1 - rho) E_batch[z z^T]) and p_j = sqrt(s_j) / max_k sqrt(s_k) + eps.
    Their analysis shows a trained predictor converges to this form; setting it directly skips the
    predictor's own slow learning, which is what a short run cannot afford. Updated on every training
    forward, over every rank's rows; no gradient reaches it, though gradients flow through it."""

    def __init__(self, dim: int, rho: float, eps: float):
        super().__init__()
        self.rho, self.eps = rho, eps
        self.register_buffer("correlation", torch.zeros(dim, dim))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))  # the first batch replaces the zeros
        self.register_buffer("weight", torch.eye(dim))

    @torch.no_grad()
    def _refresh(self, z: torch.Tensor) -> None:
        z = z.detach().float()
        rows = all_reduce_sum(torch.tensor([float(len(z))], device=z.device))
        batch = all_reduce_sum(z.T @ z) / rows
        rho = torch.where(self.seen, self.rho, 0.0)
        self.correlation.mul_(rho).add_(batch * (1 - rho))
        self.seen.fill_(True)
        values, vectors = torch.linalg.eigh(self.correlation)
        roots = values.clamp(min=0).sqrt()
        shares = roots / roots.max().clamp(min=1e-12) + self.eps
        self.weight.copy_((vectors * shares) @ vectors.T)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._refresh(z)
        return z @ self.weight.to(z.dtype)  # the weight is symmetric


# The predictor's kinds (`predictor=`), each built from the projection's width, the head's hidden width and
# the settings.
PREDICTORS: dict[str, Callable[[int, int, ByolSettings], nn.Module]] = {
    "mlp": lambda width, hidden, settings: ProjectionHead(width, hidden, width),
    "direct": lambda width, hidden, settings: DirectPredictor(width, settings.direct_rho, settings.direct_eps),
}


def projection_std(z: torch.Tensor) -> torch.Tensor:
    """A collapse diagnostic (SimSiam, Chen & He, CVPR 2021, Fig. 2): the standard deviation over the
    batch of the L2-normalised online projections, averaged over dimensions, here times sqrt(dimensions):
    about 1 for projections spread over the sphere, 0 for a collapse to one point. Logged beside the loss
    and reported as `final_projection_std`."""
    z = F.normalize(z.float(), dim=1)
    return z.std(dim=0).mean() * z.shape[1] ** 0.5


class BYOL(Objective):
    def __init__(self, encoder: Encoder, settings: ByolSettings, schedule: Schedule):
        super().__init__()
        self.tau_base = settings.tau
        self.predictor_lr = settings.predictor_lr
        self.total_steps = schedule.total_steps
        self.target = momentum_copy(encoder)
        first, last = encoder.head.layers[0], encoder.head.layers[-1]
        self.predictor = PREDICTORS[settings.predictor](last.out_features, first.out_features, settings)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # updates made: the schedule's k
        self._projection_std: torch.Tensor | None = None

    def tau(self, step: torch.Tensor | int) -> torch.Tensor:
        """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, for the k-th update of K."""
        k = torch.as_tensor(step, dtype=torch.float64)  # on the buffer's device: no wait for the host
        return 1 - (1 - self.tau_base) * (torch.cos(math.pi * k / self.total_steps) + 1) / 2

    def loss(self, encoder: Encoder, views: torch.Tensor, device: torch.device) -> torch.Tensor:
        half = views.shape[0] // 2
        with autocast(device):
            z = encoder.project(encoder.features(views))
            p = self.predictor(z)
            with torch.no_grad():
                t = self.target.project(self.target.features(views))
        p, t = F.normalize(p.float(), dim=1), F.normalize(t.float(), dim=1)
        self._projection_std = projection_std(z.detach())
        cosine = (p * t.roll(half, dims=0)).sum(dim=1)  # view 1's prediction with view 2's target, and back
        return (2 - 2 * cosine).view(2, half).sum(dim=0).mean()

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"projection_std": self._projection_std} if self._projection_std is not None else {}

    def lr_scales(self) -> dict[nn.Module, float]:
        trained = any(p.requires_grad for p in self.predictor.parameters())  # DirectPred's has nothing to train
        return {self.predictor: self.predictor_lr} if trained and self.predictor_lr != 1 else {}

    def update(self, encoder: Encoder) -> None:
        momentum_update(self.target, encoder, self.tau(self.steps))
        self.steps += 1


def build_byol(encoder: Encoder, settings: ByolSettings, schedule: Schedule) -> BYOL:
    if not 0 <= settings.tau <= 1:
        raise UserError(f"tau must be in [0, 1], got {settings.tau}")
    if not settings.predictor_lr > 0:
        raise UserError(f"predictor_lr must be positive, got {settings.predictor_lr}")
    if settings.predictor not in PREDICTORS:
        raise UserError(f"predictor must be one of {', '.join(PREDICTORS)}, got {settings.predictor!r}")
    if not 0 <= settings.direct_rho < 1:
        raise UserError(f"direct_rho must be in [0, 1), got {settings.direct_rho}")
    if not settings.direct_eps >= 0:
        raise UserError(f"direct_eps must be 0 or more, got {settings.direct_eps}")
    return BYOL(encoder, settings, schedule)


register_method(Method("byol", "BYOL: predictor and an EMA target network, no negatives (Grill et al., 2020)",
                       ByolSettings(), build_byol))
