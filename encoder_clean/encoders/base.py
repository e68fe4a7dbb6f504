"""The encoder interface every architecture implements.

An encoder takes images with values in [0, 1] (N, 3, H, W), normalises them itself (mean/std are part of
the checkpoint's metadata), and returns the embedding before any projection head. Distillation and
attacks read intermediate feature maps through *named layer taps*.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from encoder_clean.errors import UserError

PROJECTION_DIM = 128


class ProjectionHead(nn.Module):
    """SimCLR projection head: Linear (no bias) -> BatchNorm -> ReLU -> Linear (SimCLR, Chen et al., ICML 2020).

    Indices 0, 1, 3 match the `g.` head of the public SimCLR/BadEncoder releases.
    """

    def __init__(self, feature_dim: int, hidden_dim: int | None = None, out_dim: int = PROJECTION_DIM):
        super().__init__()
        hidden_dim = hidden_dim or min(feature_dim, 512)
        self.layers = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class Encoder(nn.Module):
    """Base class: images in [0, 1] -> features, with named layer taps and an optional head."""

    #: names accepted by `features_with_taps`, shallow to deep
    tap_names: tuple[str, ...] = ()
    #: transformers only: `attn.N`, block N's self-attention probabilities (N, heads, tokens, tokens)
    attention_taps: tuple[str, ...] = ()

    def __init__(self, arch: str, feature_dim: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.arch = arch
        self.feature_dim = feature_dim
        self.image_size = image_size
        # Normalisation constants travel in the checkpoint metadata, not the state dict.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.head: ProjectionHead | None = None

    # -- interface ----------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def features_with_taps(self, images: torch.Tensor, taps: Sequence[str] = ()
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embedding of `images` and the feature maps at the requested taps."""
        raise NotImplementedError

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_with_taps(images, ())[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    @property
    def token_side(self) -> int | None:
        """Pixels per side of the square image patch one input token sees (a ViT's patch size), or None
        for encoders without patch tokens (convnets)."""
        return None

    def project(self, features: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise UserError(f"encoder {self.arch} has no projection head")
        return self.head(features)

    def add_head(self) -> "Encoder":
        """Attach a fresh SimCLR projection head if there is none."""
        if self.head is None:
            self.head = ProjectionHead(self.feature_dim).to(self.mean.device)
        return self

    def reinitialised(self) -> "Encoder":
        """A randomly initialised encoder of the same architecture, input size and normalisation."""
        from encoder_clean.encoders.registry import create_encoder  # the registry imports this module

        return create_encoder(self.arch, image_size=self.image_size, mean=self.mean.flatten().tolist(),
                              std=self.std.flatten().tolist())

    def zero_tap_channels(self, tap: str, channels: Sequence[int]) -> list[str]:
        """Make the given output channels of layer tap `tap` exactly zero for every input, by zeroing
        weights only (so the checkpoint format does not change). Returns the parameter names touched;
        pruning defenses re-apply it after every optimiser step."""
        raise UserError(f"{self.arch} does not support channel pruning")

    # -- helpers ------------------------------------------------------------------------------
    def check_taps(self, taps: Sequence[str]) -> None:
        known = (*self.tap_names, *self.attention_taps)
        unknown = [t for t in taps if t not in known]
        if unknown:
            raise UserError(f"unknown layer tap(s) {', '.join(unknown)} for {self.arch}; "
                            f"available: {', '.join(known)}")

    def spec(self) -> dict[str, object]:
        """What the checkpoint metadata records about the architecture."""
        return {
            "arch": self.arch,
            "image_size": self.image_size,
            "feature_dim": self.feature_dim,
            "mean": [round(float(v), 6) for v in self.mean.flatten()],
            "std": [round(float(v), 6) for v in self.std.flatten()],
        }
