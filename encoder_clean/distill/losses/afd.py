"""AFD, attention-based feature distillation as the seed paper's reference code computes it.

In the spirit of Ji et al., "Show, Attend and Distill: Knowledge Distillation via Attention-based
Feature Matching" (AAAI 2021): every channel's spatial map is L2-normalised, the squared differences of
student and teacher channels are averaged over space, and the channels are weighted by an attention
vector computed from the teacher's globally average-pooled channels through a small squeeze-and-excitation
block (Linear-ReLU-Linear, softmax over channels). The block is learnable and trains with the student; a
1x1 convolution connector maps the student's channels onto the teacher's when the widths differ.

Layer taps only (`features` raises a UserError): a pooled vector has no spatial map to normalise.
Default weight 1000: the reference code's beta per layer (arXiv 2403.03846). The channel weights sum to
one, so the loss is a mean over space of squared differences of unit vectors, like AT's; but per-channel
maps disagree more than channel-summed attention maps, so at 1000 AFD is 6..15x AT at 1000 (measured as
in fitnet.py: 89..95 between different networks, 4.5 for a 10%-weight-noise student, against AT's
14..17 and 0.30).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.distill.losses.fitnet import make_connector, match_spatial, require_maps
from encoder_clean.distill.losses.registry import LossKind, register_loss

SE_REDUCTION = 16  # squeeze-and-excitation's usual bottleneck ratio
SE_MIN_HIDDEN = 4  # keeps narrow (CPU-sized) stages from a 1-unit bottleneck


class AFDLoss(nn.Module):
    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.connector = make_connector(student_channels, teacher_channels)
        hidden = max(teacher_channels // SE_REDUCTION, SE_MIN_HIDDEN)
        self.channel_attention = nn.Sequential(
            nn.Linear(teacher_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, teacher_channels),
        )

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        require_maps("afd", student, teacher)
        student = match_spatial(self.connector(student), teacher)
        weights = torch.softmax(self.channel_attention(teacher.mean(dim=(2, 3))), dim=1)  # (N, C)
        student = F.normalize(student.flatten(2), dim=2)
        teacher = F.normalize(teacher.flatten(2), dim=2)
        per_channel = (student - teacher).pow(2).mean(dim=2)  # (N, C)
        return (weights * per_channel).sum(dim=1).mean()


register_loss(LossKind(
    name="afd",
    description="attention-based feature distillation: channel-attention-weighted MSE of "
                "spatially L2-normalised maps (learnable SE-style weights)",
    build=AFDLoss,
    default_weight=1000.0,
    group="attention",
))
