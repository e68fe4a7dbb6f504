"""Shared fixtures: tiny encoders and datasets so the default suite stays fast."""

from __future__ import annotations

import pytest
import torch

from encoder_clean.data.builtin import make_builtin
from encoder_clean.encoders import create_encoder

TINY_ARCH = "resnet10-cifar-w8"


@pytest.fixture(scope="session")
def tiny_data():
    return make_builtin("shapes", train=200, test=100, seed=0)


@pytest.fixture
def tiny_encoder():
    torch.manual_seed(0)
    return create_encoder(TINY_ARCH).eval()


@pytest.fixture
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
