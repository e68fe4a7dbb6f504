"""SimCLR pre-training (NT-Xent), shared by `pretrain` and the data-poisoning attacks (BASSL, CTRL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from encoder_clean.data.augment import AUGMENTATIONS, AugmentConfig, simclr_augment
from encoder_clean.encoders.base import Encoder
from encoder_clean.parallel import gather_rows
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, device_generator, fused, take
from encoder_clean.training import EpochBatcher, run_steps
from encoder_clean.training.loop import warmup_cosine


@dataclass(frozen=True)
class SimCLRConfig:
    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5  # REFERENCE.md
    warmup_steps: int = 20
    augment: AugmentConfig = field(default_factory=lambda: AUGMENTATIONS["strong"])


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N views; each view's positive is its twin.

    In a data-parallel run the N images are the global batch: each rank scores its own views against
    every rank's (gathered with their gradients), and the ranks' mean losses average to the global one.
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    all1, start = gather_rows(z1)
    all2, _ = gather_rows(z2)
    local, total = z1.shape[0], all1.shape[0]
    rows = torch.arange(start, start + local, device=z1.device)
    rows = torch.cat([rows, rows + total])  # where each local view sits among the 2N
    logits = torch.cat([z1, z2]) @ torch.cat([all1, all2]).t() / temperature
    itself = (torch.arange(2 * local, device=z1.device), rows)
    logits = logits.index_put(itself, torch.tensor(float("-inf"), device=z1.device))
    return F.cross_entropy(logits, (rows + total) % (2 * total))


def simclr_loss(encoder: Encoder, images: torch.Tensor, g: torch.Generator, config: SimCLRConfig,
                device: torch.device) -> torch.Tensor:
    """NT-Xent of two augmented views of `images` (uint8), through the projection head."""
    size = encoder.image_size
    views = torch.cat([simclr_augment(images, size, g, config.augment),
                       simclr_augment(images, size, g, config.augment)])
    views = views.contiguous(memory_format=torch.channels_last)
    with autocast(device):
        z = encoder.project(encoder.features(views))
    half = images.shape[0]
    return nt_xent(z[:half], z[half:], config.temperature)


def pretrain_simclr(encoder: Encoder, images: torch.Tensor, config: SimCLRConfig, *, seed: int,
                    device: torch.device, progress: Progress = NULL_PROGRESS,
                    description: str = "SimCLR", after_step: Callable[[], None] | None = None
                    ) -> dict[str, object]:
    """Train `encoder` (with its projection head) in place on uint8 `images` (on `device`, or in host
    memory for data too large for it: see `place_images`)."""
    encoder.add_head().train()
    g = device_generator(device, seed)
    batcher = EpochBatcher(len(images), config.batch_size, g, images.device)
    total = max(1, config.epochs * batcher.steps_per_epoch)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  **fused(device))
    scheduler = warmup_cosine(optimizer, total, min(config.warmup_steps, total // 10))
    batches = iter(batcher)

    def step(_: int) -> torch.Tensor:
        return simclr_loss(encoder, take(images, next(batches), device), g, config, device)

    history = run_steps(step, optimizer, total, scheduler=scheduler, progress=progress,
                        state={"encoder": encoder, "generator": g, "batches": batches},
                        description=description, after_step=after_step)
    encoder.eval()
    return {"steps": total, "final_loss": history[-1]["loss"] if history else None}
