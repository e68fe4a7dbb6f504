"""Encoder features, L2-normalised: the one place that embeds images for evaluation (computed once per
split in eval mode, the protocol), for the attacks that train on embeddings and for the defenses that
compare them."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from encoder_clean.data.augment import to_float
from encoder_clean.encoders.base import Encoder
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast
from encoder_clean.triggers import Trigger


def embed(encoder: Encoder, images: torch.Tensor, device: torch.device,
          forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """L2-normalised features of float `images` (at the encoder's input size) under the device's autocast,
    with gradients. `forward` stands in for `encoder.features` (ANP calls it with overridden weights)."""
    with autocast(device):
        features = (forward or encoder.features)(images)
    return F.normalize(features.float(), dim=1)


@torch.no_grad()
def embed_batches(encoder: Encoder, images: torch.Tensor, device: torch.device, *, batch_size: int = 256,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  channels_last: bool = False) -> torch.Tensor:
    """`embed` of uint8 `images`, a batch at a time, without gradients (in the encoder's current mode)."""
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start:start + batch_size], encoder.image_size)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        chunks.append(embed(encoder, batch, device, forward))
    return torch.cat(chunks)


@torch.no_grad()
def extract_features(encoder: Encoder, images: torch.Tensor, *, device: torch.device,
                     trigger: Trigger | None = None, batch_size: int = 512, normalize: bool = True,
                     progress: Progress = NULL_PROGRESS, description: str = "features") -> torch.Tensor:
    """Features of uint8 `images` (optionally stamped with `trigger`), as float32 on `device`.

    Images are resized to the encoder's input size before stamping, so triggers are stamped at the
    resolution the encoder sees.
    """
    was_training = encoder.training
    encoder.eval()
    chunks = []
    with progress.task(description, total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = to_float(images[start:start + batch_size].to(device), encoder.image_size)
            if trigger is not None:
                batch = trigger.stamp(batch)
            if device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                feats = encoder.features(batch)
            chunks.append(feats.float())
            advance(len(batch))
    encoder.train(was_training)
    out = torch.cat(chunks) if chunks else torch.empty(0, encoder.feature_dim, device=device)
    return F.normalize(out, dim=1) if normalize else out
