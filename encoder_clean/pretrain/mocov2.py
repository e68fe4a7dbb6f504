"""MoCo v2 (Chen, Fan, Girshick, He, 2020): queries from the encoder, keys from a momentum copy of it,
InfoNCE against a queue of earlier keys.

Published settings (the defaults): temperature 0.2, a 2-layer MLP head, and at CIFAR scale a queue of
4,096 keys and momentum 0.99. The head is the encoder's projection head, which has a BatchNorm between
its two layers (the layout the checkpoints store; solo-learn's MoCo v2+ uses the same). The loss is the
published asymmetric one, the first view's query against the second view's key; `symmetric=true` adds
the second view's query against the first view's key and enqueues both views' keys (the symmetric loss
of the MoCo authors' CIFAR-10 demo and of solo-learn's MoCo v2+): twice the gradient views per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.parallel import gather_rows
from encoder_clean.pretrain.momentum import momentum_copy, momentum_update
from encoder_clean.pretrain.registry import Method, Objective, Schedule, register_method
from encoder_clean.runtime import autocast


@dataclass(frozen=True)
class MocoSettings:
    temperature: float = 0.2
    queue_size: int = 4096
    momentum: float = 0.99
    symmetric: bool = False


# The published CIFAR-scale queue holds 4,096 keys of 50,000 images (8%; ImageNet's 65,536 of 1.28M, 5%).
QUEUE_SHARE = 4096 / 50000


def queue_capacity(asked: int, schedule: Schedule) -> int:
    """The queue length for a run: `asked`, but on a smaller training set at most the published share of
    it (and at least one batch). A queue holding most of the set also holds a recent key of nearly
    every query's own image, pushed away as a negative: on the 5,000 built-in images, 3 epochs with 4,096
    keys gave 40.75% linear-probe accuracy and with 512 keys 45.95% (random init: 25.10%)."""
    return max(1, min(asked, max(schedule.batch_size, round(QUEUE_SHARE * schedule.images))))


class MoCo(Objective):
    def __init__(self, encoder: Encoder, settings: MocoSettings, schedule: Schedule):
        super().__init__()
        self.temperature = settings.temperature
        self.momentum = settings.momentum
        self.symmetric = settings.symmetric
        self.key_encoder = momentum_copy(encoder)
        g = schedule.generator
        dim = encoder.head.layers[-1].out_features
        # Random unit keys until real ones replace them, as in the reference code.
        queue = F.normalize(torch.randn(queue_capacity(settings.queue_size, schedule), dim, generator=g,
                                        device=g.device), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long, device=g.device))

    def loss(self, encoder: Encoder, views: torch.Tensor, device: torch.device) -> torch.Tensor:
        half = views.shape[0] // 2
        queries, keys = (views, views.roll(half, dims=0)) if self.symmetric else (views[:half], views[half:])
        with autocast(device):
            q = encoder.project(encoder.features(queries))
            with torch.no_grad():
                k = self.key_encoder.project(self.key_encoder.features(keys))
        q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)
        negative = q @ self.queue.clone().t()  # a copy: the queue changes below, before the backward pass
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        for part in k.split(half):  # one view's keys at a time: the global batch's order on any number of ranks
            self.enqueue(part)
        return loss * 2 if self.symmetric else loss  # the sum of both orders' mean losses

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest keys with this step's, every rank's in rank order (the global batch)."""
        keys, _ = gather_rows(keys)
        size = self.queue.shape[0]
        slots = (self.pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots[-size:]] = keys[-size:]  # a batch longer than the queue keeps its newest keys
        self.pointer.copy_((self.pointer + keys.shape[0]) % size)

    def update(self, encoder: Encoder) -> None:
        momentum_update(self.key_encoder, encoder, self.momentum)


def build_moco(encoder: Encoder, settings: MocoSettings, schedule: Schedule) -> MoCo:
    if settings.temperature <= 0:
        raise UserError(f"temperature must be positive, got {settings.temperature}")
    if settings.queue_size < 1:
        raise UserError(f"queue_size must be at least 1, got {settings.queue_size}")
    if not 0 <= settings.momentum <= 1:
        raise UserError(f"momentum must be in [0, 1], got {settings.momentum}")
    return MoCo(encoder, settings, schedule)


register_method(Method("mocov2", "MoCo v2: momentum key encoder and a queue of negatives (Chen et al., 2020)",
                       MocoSettings(), build_moco))
