"""CC, "correlation congruence" as the seed paper's reference code computes it.

Named after Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019), but the
reference code's loss is simpler: with d_i = |F_s(x_i) - F_t(x_i)| flattened per sample, the loss is the
mean over consecutive samples of the dot product d_i . d_{i+1}. We divide by the feature size (a mean
instead of a sum over elements) so the scale does not grow with the map size. It is zero when the
student equals the teacher and non-negative otherwise; a batch of one pairs the sample with itself.

Works on layer maps and on `features`; a 1x1 conv (Linear) connector maps the student's channels onto
the teacher's when the widths differ. Default weight 2, not the reference code's beta 1000: like FitNet
it is a product of raw activation differences, 1..10 per layer between different networks, so beta 1000
would dwarf AT and NT-Xent. Measured as in fitnet.py, weight 2 gives 49 / 10..13 / 0.15 against AT's
14 / 16..17 / 0.30.
"""

from __future__ import annotations

import torch
from torch import nn

from encoder_clean.distill.losses.fitnet import make_connector, match_spatial
from encoder_clean.distill.losses.registry import LossKind, register_loss


class CCLoss(nn.Module):
    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.connector = make_connector(student_channels, teacher_channels)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = match_spatial(self.connector(student), teacher)
        d = (student - teacher).abs().flatten(1)  # (N, K)
        if d.shape[0] < 2:
            return (d * d).mean()
        return (d[:-1] * d[1:]).mean()


register_loss(LossKind(
    name="cc",
    description="the reference code's CC: mean dot product of consecutive samples' |student - teacher|",
    build=CCLoss,
    default_weight=2.0,
    group="feature",
))
