"""Probabilistic knowledge transfer (Passalis & Tefas, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV 2018).

Each network's samples are L2-normalised; the cosine similarities within the batch, shifted to [0, 1],
are normalised row by row into conditional probabilities p(j | i), and the loss is KL(teacher ||
student), summed over j and averaged over i. Relational (b x b), so no connector is needed; works on
`features` (the default tap, as in the paper) and on flattened layer maps.

Default weight 10000: the shifted similarities are close to uniform, so the KL is small (1e-3..2e-3
between different networks, 3e-5 for a 10%-weight-noise student), and independent of the batch size
because it is summed over j. Measured as in fitnet.py, weight 10000 gives 21 / 9..11 / 0.34 on
`features` against AT's 14 / 16..17 / 0.30 on the four stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.distill.losses.registry import FEATURES, LossKind, register_loss

EPS = 1e-7  # keeps the logarithm finite where a similarity is exactly zero


def _conditional_probabilities(x: torch.Tensor) -> torch.Tensor:
    flat = F.normalize(x.flatten(1), dim=1)
    similarity = (flat @ flat.t() + 1) / 2  # cosine in [-1, 1] -> [0, 1]
    return similarity / similarity.sum(dim=1, keepdim=True)


class PKTLoss(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        p_student = _conditional_probabilities(student)
        p_teacher = _conditional_probabilities(teacher)
        kl = p_teacher * (torch.log(p_teacher + EPS) - torch.log(p_student + EPS))
        return kl.sum(dim=1).mean()


def _build(student_channels: int, teacher_channels: int) -> nn.Module:
    return PKTLoss()


register_loss(LossKind(
    name="pkt",
    description="probabilistic knowledge transfer: KL(teacher || student) of cosine-similarity "
                "conditional distributions over the batch",
    build=_build,
    default_weight=10000.0,
    default_taps=(FEATURES,),
    group="relation",
))
