"""The reference code's "SP": one minus the cosine similarity of student and teacher embeddings.

Not similarity-preserving KD (that is `similarity`): the seed paper's code names its negative-cosine
feature term "SP" (arXiv 2403.03846). Written as 1 - cosine, averaged over the batch, so it is zero when the
student equals the teacher; its gradients are those of the negative cosine. Default tap `features` and
default weight 1 (the reference code's beta5). On layer maps it compares the globally average-pooled
maps. A Linear connector maps the student's dimensions onto the teacher's when they differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.distill.losses.fitnet import make_connector
from encoder_clean.distill.losses.registry import FEATURES, LossKind, register_loss


class CosineLoss(nn.Module):
    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.connector = make_connector(student_channels, teacher_channels)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.dim() == 4:
            student, teacher = student.mean(dim=(2, 3)), teacher.mean(dim=(2, 3))
        student = self.connector(student.flatten(1))
        return (1 - F.cosine_similarity(student, teacher.flatten(1), dim=1)).mean()


register_loss(LossKind(
    name="sp",
    description="the reference code's 'SP': 1 - cosine similarity of the pooled features",
    build=CosineLoss,
    default_weight=1.0,
    default_taps=(FEATURES,),
    group="layer",
))
