"""Our ResNet blocks are torchvision's: same names, same weights from a seed, same outputs; and the
command line starts without importing torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from encoder_clean.encoders import blocks


def _downsample(inplanes, outplanes, stride):
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(outplanes))


@pytest.mark.parametrize("name", ["BasicBlock", "Bottleneck"])
@pytest.mark.parametrize("stride", [1, 2])
def test_blocks_match_torchvision_bit_for_bit(name, stride):
    from torchvision.models import resnet as reference

    ours_class, theirs_class = getattr(blocks, name), getattr(reference, name)
    assert ours_class.expansion == theirs_class.expansion

    def build(block_class):
        torch.manual_seed(0)
        out = 8 * block_class.expansion
        return block_class(16, 8, stride, _downsample(16, out, stride)).eval()

    ours, theirs = build(ours_class), build(theirs_class)
    assert [name for name, _ in ours.named_modules()] == [name for name, _ in theirs.named_modules()]
    for (key, mine), (other_key, other) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert key == other_key and torch.equal(mine, other)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_the_command_line_starts_without_torchvision():
    code = "import sys, encoder_clean.cli; sys.exit('torchvision' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
