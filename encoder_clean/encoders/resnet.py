"""ResNet encoders: torchvision's blocks and parameter names (`encoders/blocks.py`), configurable stem and width.

Keeping torchvision's names (`conv1`, `bn1`, `layer1.0.conv1`, `downsample.0`, ...) means torchvision
state dicts and the Sequential layouts of the SimCLR/BadEncoder releases map onto ours by renaming
prefixes only (see `encoders/legacy.py`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from encoder_clean.encoders.base import Encoder
from encoder_clean.encoders.blocks import BasicBlock, Bottleneck
from encoder_clean.errors import UserError
from encoder_clean.encoders.registry import IMAGENET_MEAN, IMAGENET_STD, register_arch

STAGES = ("layer1", "layer2", "layer3", "layer4")

DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNetEncoder(Encoder):
    """ResNet backbone with global average pooling; taps `layer1`..`layer4`.

    `cifar_stem` gives the SimCLR/BadEncoder variant: a 3x3 stride-1 first convolution and no max-pool.
    """

    tap_names = STAGES

    def __init__(self, *, arch: str, image_size: int, mean: Sequence[float], std: Sequence[float],
                 depth: int, width: int = 64, cifar_stem: bool = False):
        block, blocks_per_stage = DEPTHS[depth]
        super().__init__(arch, feature_dim=width * 8 * block.expansion, image_size=image_size,
                         mean=mean, std=std)
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = width
        for index, (name, count) in enumerate(zip(STAGES, blocks_per_stage)):
            planes = width * 2**index
            stage, in_planes = _make_stage(block, in_planes, planes, count, stride=1 if index == 0 else 2)
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def features_with_taps(self, images: torch.Tensor, taps: Sequence[str] = ()
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if taps:
            self.check_taps(taps)
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(images)))))
        tapped: dict[str, torch.Tensor] = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            if name in taps:
                tapped[name] = x
        return torch.flatten(self.avgpool(x), 1), tapped

    @torch.no_grad()
    def zero_tap_channels(self, tap: str, channels: Sequence[int]) -> list[str]:
        # A stage's output is relu(branch + shortcut) in every block. Zeroing the channel in each
        # BatchNorm that writes into the stage's residual stream (every block's last BN and the
        # downsample BN) makes block after block output exactly 0 there: relu(0 + 0) = 0.
        self.check_taps([tap])
        if getattr(self, tap)[0].downsample is None:
            raise UserError(f"{tap} of {self.arch} adds its input unchanged, so its channels cannot be zeroed "
                            f"by weights alone; prune a later stage")
        index = torch.as_tensor(list(channels), dtype=torch.long)
        touched = []
        for block_name, block in getattr(self, tap).named_children():
            last_bn = "bn3" if isinstance(block, Bottleneck) else "bn2"
            norms = [(last_bn, getattr(block, last_bn))]
            if block.downsample is not None:
                norms.append(("downsample.1", block.downsample[1]))
            for norm_name, norm in norms:
                norm.weight[index.to(norm.weight.device)] = 0
                norm.bias[index.to(norm.bias.device)] = 0
                touched.append(f"{tap}.{block_name}.{norm_name}")
        return touched


def _make_stage(block, in_planes: int, planes: int, count: int, stride: int) -> tuple[nn.Sequential, int]:
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or in_planes != out_planes:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_planes),
        )
    layers = [block(in_planes, planes, stride, downsample)]
    layers += [block(out_planes, planes) for _ in range(count - 1)]
    return nn.Sequential(*layers), out_planes


def _init_weights(model: nn.Module) -> None:
    # torchvision's initialisation: Kaiming for convolutions, BN to identity.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _register_all() -> None:
    for depth in (18, 34, 50):
        register_arch(f"resnet{depth}", ResNetEncoder,
                      f"torchvision ResNet-{depth} (7x7 stem, max-pool), 224 px, ImageNet statistics",
                      image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, depth=depth)
        register_arch(f"resnet{depth}-cifar", ResNetEncoder,
                      f"CIFAR ResNet-{depth} (3x3 stride-1 stem, no max-pool): the SimCLR/BadEncoder encoder",
                      depth=depth, cifar_stem=True)
    for depth, width in ((18, 16), (18, 32), (34, 16), (10, 8)):
        register_arch(f"resnet{depth}-cifar-w{width}", ResNetEncoder,
                      f"CIFAR ResNet-{depth} with base width {width}, for CPU work",
                      depth=depth, width=width, cifar_stem=True)


_register_all()
