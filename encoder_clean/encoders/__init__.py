"""Encoders: the architecture registry, our ResNets, and checkpoint loading/saving."""

from encoder_clean.encoders.base import Encoder, ProjectionHead
from encoder_clean.encoders.registry import create_encoder, get_arch, list_archs, register_arch

# Importing the modules registers their architectures.
from encoder_clean.encoders import resnet as _resnet  # noqa: F401,E402
from encoder_clean.encoders.wrapped import register_small_vits  # noqa: E402

register_small_vits()

__all__ = ["Encoder", "ProjectionHead", "create_encoder", "get_arch", "list_archs", "register_arch"]
