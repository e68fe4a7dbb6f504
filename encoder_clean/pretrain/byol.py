"""BYOL (Grill et al., NeurIPS 2020): the online network (encoder, projector, predictor) regresses the
projection that a target network, an exponential moving average of the online encoder and projector,
makes of the other view; no negatives.

Published settings (the defaults): the loss 2 - 2 cos(prediction, target projection), summed over both
orders of the two views, and the target's rate tau rising from 0.996 to 1 on a cosine schedule over the
run. The projector is the encoder's projection head; the predictor has the same layout
(Linear-BatchNorm-ReLU-Linear, as in the paper) at the head's own widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.encoders.base import Encoder, ProjectionHead
from encoder_clean.errors import UserError
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
        self.predictor = ProjectionHead(last.out_features, first.out_features, last.out_features)
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
        return {} if self.predictor_lr == 1 else {self.predictor: self.predictor_lr}

    def update(self, encoder: Encoder) -> None:
        momentum_update(self.target, encoder, self.tau(self.steps))
        self.steps += 1


def build_byol(encoder: Encoder, settings: ByolSettings, schedule: Schedule) -> BYOL:
    if not 0 <= settings.tau <= 1:
        raise UserError(f"tau must be in [0, 1], got {settings.tau}")
    if not settings.predictor_lr > 0:
        raise UserError(f"predictor_lr must be positive, got {settings.predictor_lr}")
    return BYOL(encoder, settings, schedule)


register_method(Method("byol", "BYOL: predictor and an EMA target network, no negatives (Grill et al., 2020)",
                       ByolSettings(), build_byol))
