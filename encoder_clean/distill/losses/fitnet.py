"""FitNet hint loss: mean squared error between student and teacher tensors at a tap.

Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015). A learned regressor (here a 1x1
convolution, a Linear on the pooled embedding) maps the student's channels onto the teacher's when the
widths differ. Works on layer maps (N, C, H, W) and on `features` (N, D).

This module also holds the helpers the other map losses share (`Connector`, `make_connector`,
`match_spatial`, `require_maps`): the connector is FitNets' regressor.

Default weight 1, not the reference code's beta 1000: the hint loss is a raw MSE of BatchNorm-scaled
activations, 1.8..13 per layer between two different networks, while AT's unit-norm maps give 3e-4..1e-2
per layer. With beta 1000 FitNet would outweigh AT and NT-Xent by three orders of magnitude. Measured
(layer1..layer4 summed, batch 128, a trained CIFAR ResNet-18 of base width 16 as teacher): random-init,
other trained and 10%-weight-noise students give 33 / 10..14 / 0.19 at weight 1, against 14 / 16..17 /
0.30 for AT at 1000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.distill.losses.registry import LossKind, register_loss
from encoder_clean.errors import UserError


class Connector(nn.Module):
    """Learned linear map of the student's channels onto the teacher's.

    One weight serves both tensor shapes: a 1x1 convolution on maps (N, C, H, W), a Linear on (N, D).
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.linear = nn.Linear(student_channels, teacher_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return F.conv2d(x, self.linear.weight[:, :, None, None], self.linear.bias)
        return self.linear(x)


def make_connector(student_channels: int, teacher_channels: int) -> nn.Module:
    """A `Connector` when the widths differ, else the identity (no parameters to train)."""
    if student_channels == teacher_channels:
        return nn.Identity()
    return Connector(student_channels, teacher_channels)


def match_spatial(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Resize a student map (N, C, H, W) to the teacher's spatial size; other shapes pass through."""
    if student.dim() != 4 or student.shape[-2:] == teacher.shape[-2:]:
        return student
    size = tuple(teacher.shape[-2:])
    if student.shape[-2] >= size[0] and student.shape[-1] >= size[1]:
        # Shrinking: average pooling keeps every location's contribution.
        return F.adaptive_avg_pool2d(student, size)
    return F.interpolate(student, size=size, mode="bilinear", align_corners=False)


def require_maps(loss_name: str, *tensors: torch.Tensor) -> None:
    """Raise a UserError unless every tensor is a layer map (N, C, H, W)."""
    for tensor in tensors:
        if tensor.dim() != 4:
            raise UserError(f"distillation loss {loss_name!r} compares layer feature maps (N, C, H, W) and "
                            f"supports layer taps only (e.g. layer1..layer4), not the pooled 'features' "
                            f"tap; got a tensor of shape {tuple(tensor.shape)}")


class FitNetLoss(nn.Module):
    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.connector = make_connector(student_channels, teacher_channels)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = match_spatial(self.connector(student), teacher)
        return F.mse_loss(student, teacher)


register_loss(LossKind(
    name="fitnet",
    description="FitNets hint loss: MSE of the feature maps (1x1 conv connector when widths differ)",
    build=FitNetLoss,
    default_weight=1.0,
    group="feature",
))
