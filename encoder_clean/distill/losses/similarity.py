"""Similarity-preserving knowledge distillation (Tung & Mori, "Similarity-Preserving Knowledge
Distillation", ICCV 2019).

Each network's tensors are flattened per sample into Q (b, K); the batch Gram matrix G = Q Q^T (b x b)
is L2-normalised row by row, and the loss is ||G_s - G_t||_F^2 / b^2. Gram matrices are b x b whatever
the widths and map sizes, so no connector is needed. Works on layer maps and on `features`.

Default taps: the layer stages, like every map loss of the seed paper (a sum over layer1..layer4), so it
can replace AT one for one; the CRD benchmark applies it to the last stage's map only (`@layer4`), and
`@features` compares the pooled embeddings. Default weight 3000, the CRD benchmark's (Tian et al.,
2020) weight for this loss. Measured as in fitnet.py, it gives 15 / 2.8..5.7 / 0.07 on the four stages
against AT's 14 / 16..17 / 0.30. The loss shrinks as 1/b with the batch size b (figures at b = 128).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.distill.losses.registry import LossKind, register_loss


def _normalised_gram(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


class SimilarityLoss(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        batch = student.shape[0]
        return (_normalised_gram(student) - _normalised_gram(teacher)).pow(2).sum() / batch ** 2


def _build(student_channels: int, teacher_channels: int) -> nn.Module:
    return SimilarityLoss()


register_loss(LossKind(
    name="similarity",
    description="similarity-preserving KD: squared difference of row-normalised batch Gram matrices / b^2",
    build=_build,
    default_weight=3000.0,
    group="relation",
))
