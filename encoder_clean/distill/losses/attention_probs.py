"""Self-attention transfer for transformers (`attn-prob`): the student's attention follows the teacher's.

On the attention taps `attn.N` of a ViT (block N's softmax attention probabilities, (N, heads, T, T)),
the heads are averaged so that students with another head count compare, and the loss is the mean
KL(teacher || student) over the query rows, each row a distribution over the T tokens. It is zero when
the probabilities are equal and positive otherwise. Its weight (1) is not tuned: no paper fact fixes it.
"""

from __future__ import annotations

import torch
from torch import nn

from encoder_clean.distill.losses.registry import ATTENTION, LossKind, register_loss
from encoder_clean.errors import UserError

EPS = 1e-8


class AttentionProbabilityLoss(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        for tensor in (student, teacher):
            if tensor.ndim != 4 or tensor.shape[-1] != tensor.shape[-2]:
                raise UserError("attn-prob compares attention probabilities: use it on a transformer's attn.N taps")
        if student.shape[-1] != teacher.shape[-1]:
            raise UserError(f"attn-prob: the student attends over {student.shape[-1]} tokens, the teacher over "
                            f"{teacher.shape[-1]}")
        s, t = student.mean(1).clamp_min(EPS), teacher.mean(1).clamp_min(EPS)
        return (t * (t.log() - s.log())).sum(-1).mean()


register_loss(LossKind(
    name="attn-prob",
    description="KL of head-averaged self-attention probabilities (transformers; taps attn.N)",
    build=lambda student_heads, teacher_heads: AttentionProbabilityLoss(),
    default_weight=1.0,
    default_taps=ATTENTION,
    group="attention",
))
