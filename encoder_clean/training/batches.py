"""Batches as slices of an on-device random permutation, one epoch after another (no DataLoader)."""

from __future__ import annotations

from typing import Iterator

import torch

from encoder_clean.errors import UserError


class EpochBatcher:
    """Yield index tensors of `batch_size` over `count` samples, reshuffled every epoch.

    Incomplete last batches are dropped (contrastive losses want full batches), unless the data holds
    fewer samples than one batch, in which case the batch shrinks to the data.
    """

    def __init__(self, count: int, batch_size: int, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        if count < 2:
            raise UserError(f"need at least 2 training images, got {count}")
        if batch_size < 2:
            raise UserError(f"batch size must be at least 2, got {batch_size}")
        self.count = count
        self.batch_size = min(batch_size, count)
        self.generator = generator
        self.device = torch.device(device)

    @property
    def steps_per_epoch(self) -> int:
        return self.count // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            order = torch.randperm(self.count, generator=self.generator, device=self.generator.device)
            order = order.to(self.device)
            for start in range(0, self.steps_per_epoch * self.batch_size, self.batch_size):
                yield order[start:start + self.batch_size]
