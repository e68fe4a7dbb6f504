"""SimCLR (Chen et al., ICML 2020): NT-Xent over the two views of every image in the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.parallel import gather_rows
from encoder_clean.pretrain.registry import Method, Objective, Schedule, register_method
from encoder_clean.runtime import autocast


@dataclass(frozen=True)
class SimCLRSettings:
    temperature: float = 0.5  # the seed paper's SimCLR encoders


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N views; each view's positive is its twin.

    In a data-parallel run the N images are the global batch: each rank scores its own views against
    every rank's (gathered with their gradients), and the ranks' mean losses average to the global one.
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    all1, start = gather_rows(z1)
    all2, _ = gather_rows(z2)
    local, total = z1.shape[0], all1.shape[0]
    rows = torch.arange(start, start + local, device=z1.device)
    rows = torch.cat([rows, rows + total])  # where each local view sits among the 2N
    logits = torch.cat([z1, z2]) @ torch.cat([all1, all2]).t() / temperature
    itself = (torch.arange(2 * local, device=z1.device), rows)
    logits = logits.index_put(itself, torch.tensor(float("-inf"), device=z1.device))
    return F.cross_entropy(logits, (rows + total) % (2 * total))


class SimCLR(Objective):
    """No state beside the encoder and its projection head."""

    def __init__(self, settings: SimCLRSettings):
        super().__init__()
        self.temperature = settings.temperature

    def loss(self, encoder: Encoder, views: torch.Tensor, device: torch.device) -> torch.Tensor:
        with autocast(device):
            z = encoder.project(encoder.features(views))
        half = views.shape[0] // 2
        return nt_xent(z[:half], z[half:], self.temperature)


def build_simclr(encoder: Encoder, settings: SimCLRSettings, schedule: Schedule) -> SimCLR:
    if settings.temperature <= 0:
        raise UserError(f"temperature must be positive, got {settings.temperature}")
    return SimCLR(settings)


register_method(Method("simclr", "SimCLR: NT-Xent over both views of the batch (Chen et al., 2020)",
                       SimCLRSettings(), build_simclr))
