"""Attention-map losses: attention transfer (`at`) and its NAD variant (`nad`).

AT: Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017). NAD: Li et al., "Neural Attention
Distillation: Erasing Backdoor Triggers from Deep Neural Networks" (ICLR 2021).

Both reduce a stage map (N, C, H, W) to a spatial attention map (a power of the activations reduced over
channels), flatten and L2-normalise it per sample, and take the mean squared difference of the student's
and the teacher's maps. The attention map has no channel axis, so students of any width compare without
a connector; a student map of another spatial size is resized to the teacher's.

Layer taps only: the pooled embedding has no spatial extent, so its attention map is a constant and the
loss would always be zero; `features` raises a UserError.

Default weight 1000 for both, the reference code's beta per layer (arXiv 2403.03846); NAD's paper used
500/1000/1000 on its three stages. With p=2 the two maps differ only by the constant factor C (sum vs
mean over channels), which the normalisation removes: `nad` equals `at` unless p changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.distill.losses.fitnet import match_spatial, require_maps
from encoder_clean.distill.losses.registry import LossKind, register_loss


def attention_map(maps: torch.Tensor, p: float = 2.0, reduce: str = "sum") -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W): |F|^p summed or averaged over channels."""
    powered = maps.abs().pow(p) if p != 2 else maps.pow(2)
    return powered.sum(1, keepdim=True) if reduce == "sum" else powered.mean(1, keepdim=True)


class AttentionLoss(nn.Module):
    def __init__(self, name: str, p: float = 2.0, reduce: str = "sum"):
        super().__init__()
        self.name, self.p, self.reduce = name, p, reduce

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        require_maps(self.name, student, teacher)
        teacher_map = attention_map(teacher, self.p, self.reduce)
        # Resize before normalising so both maps are unit vectors of the same length.
        student_map = match_spatial(attention_map(student, self.p, self.reduce), teacher_map)
        student_map = F.normalize(student_map.flatten(1), dim=1)
        teacher_map = F.normalize(teacher_map.flatten(1), dim=1)
        return (student_map - teacher_map).pow(2).mean()


def _build_at(student_channels: int, teacher_channels: int) -> nn.Module:
    return AttentionLoss("at", p=2.0, reduce="sum")


def _build_nad(student_channels: int, teacher_channels: int) -> nn.Module:
    return AttentionLoss("nad", p=2.0, reduce="mean")


register_loss(LossKind(
    name="at",
    description="attention transfer (p=2): MSE of L2-normalised spatial maps of summed squared activations",
    build=_build_at,
    default_weight=1000.0,
    group="attention",
))

register_loss(LossKind(
    name="nad",
    description="NAD attention distillation: MSE of L2-normalised maps of mean |F|^p over channels (p=2)",
    build=_build_nad,
    default_weight=1000.0,
    group="attention",
))
