"""DRUPE (Tao et al., S&P 2024): BadEncoder with several references plus a term that keeps the
distribution of triggered embeddings close to that of clean embeddings, so that the backdoor does not
show as the tight cluster DECREE-style scanners look for.

The distribution term is the sliced Wasserstein distance: project both batches of embeddings on random
unit directions, sort each projection, and average the squared differences of the sorted values.
Presets: `published` (SGD lr 0.05, 120 epochs) and `fast` (default; the BadEncoder CPU recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from encoder_clean.attacks.badencoder import BadEncoderConfig, run_embedding_attack
from encoder_clean.attacks.registry import Attack, AttackInputs, AttackOutcome, register_attack

Tensor = torch.Tensor


@dataclass(frozen=True)
class DrupeConfig(BadEncoderConfig):
    swd_weight: float = 0.05
    swd_projections: int = 64
    num_references: int = 10


PUBLISHED = DrupeConfig(epochs=120, batch_size=256, lr=0.05, optimizer="sgd", weight_decay=5e-4,
                        lambda1=1.0, lambda2=1.0, trigger_augment="none", anchor_references=False)


def sliced_wasserstein(a: Tensor, b: Tensor, projections: int, g: torch.Generator) -> Tensor:
    """Squared sliced 2-Wasserstein distance between two equally sized point clouds (N, D)."""
    if a.shape != b.shape:
        raise ValueError(f"point clouds differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    directions = F.normalize(torch.randn(a.shape[1], projections, generator=g, device=g.device).to(a), dim=0)
    sorted_a = torch.sort(a @ directions, dim=0).values
    sorted_b = torch.sort(b @ directions, dim=0).values
    return (sorted_a - sorted_b).pow(2).mean() * a.shape[1]


def run_drupe(inputs: AttackInputs, config: DrupeConfig) -> AttackOutcome:
    def distribution_term(triggered: Tensor, clean: Tensor, g: torch.Generator):
        distance = sliced_wasserstein(triggered, clean, config.swd_projections, g)
        return config.swd_weight * distance, {"swd": distance}

    return run_embedding_attack(inputs, config, description="DRUPE", extra=distribution_term)


register_attack(Attack(
    "drupe",
    "BadEncoder plus a sliced-Wasserstein term hiding the backdoor's embedding distribution (Tao et al., S&P 2024)",
    {"fast": DrupeConfig(), "published": PUBLISHED},
    run_drupe,
))
