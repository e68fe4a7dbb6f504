"""A tiny encoder with a hand-planted backdoor: a white square at a known place swaps its embedding."""

from __future__ import annotations

import torch

from encoder_clean.encoders.base import Encoder

TOP, LEFT, SIZE = 22, 22, 6  # the planted trigger: a 6x6 white square near the bottom-right corner


class PlantedBackdoor(Encoder):
    """`inner`'s embedding, replaced by a fixed target embedding as the planted square turns white.

    Differentiable in the input, as a trained backdoor is, so trigger inversion can find it. With a high
    `opens_at` and `sharpness` the gate is shut for anything but a nearly white square: a narrow backdoor,
    whose gradient vanishes from a random start.
    """

    def __init__(self, inner: Encoder, *, opens_at: float = 0.5, sharpness: float = 12.0):
        super().__init__(inner.arch, inner.feature_dim, inner.image_size, inner.mean.flatten().tolist(),
                         inner.std.flatten().tolist())
        self.inner = inner
        self.opens_at, self.sharpness = opens_at, sharpness  # the square's mean brightness where the gate is half open
        self.tap_names = inner.tap_names
        generator = torch.Generator().manual_seed(7)
        self.register_buffer("target", torch.randn(inner.feature_dim, generator=generator))

    def features_with_taps(self, images, taps=()):
        features, maps = self.inner.features_with_taps(images, taps)
        patch = images[:, :, TOP:TOP + SIZE, LEFT:LEFT + SIZE]
        gate = torch.sigmoid(self.sharpness * (patch.mean(dim=(1, 2, 3)) - self.opens_at))[:, None]
        target = self.target * features.norm(dim=1, keepdim=True) / self.target.norm()
        return (1 - gate) * features + gate * target, maps
