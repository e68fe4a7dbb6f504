"""Batches as slices of an on-device random permutation, one epoch after another (no DataLoader)."""

from __future__ import annotations

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

    def __iter__(self) -> "EpochBatches":
        return EpochBatches(self)


class EpochBatches:
    """The batches of an `EpochBatcher`, endless; its position can be saved and restored (resume)."""

    def __init__(self, batcher: EpochBatcher):
        self.batcher = batcher
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self) -> "EpochBatches":
        return self

    def __next__(self) -> torch.Tensor:
        batcher = self.batcher
        if self.order is None or self.position + batcher.batch_size > batcher.steps_per_epoch * batcher.batch_size:
            generator = batcher.generator
            self.order = torch.randperm(batcher.count, generator=generator, device=generator.device).to(batcher.device)
            self.position = 0
        batch = self.order[self.position:self.position + batcher.batch_size]
        self.position += batcher.batch_size
        return batch

    def state_dict(self) -> dict[str, object]:
        return {"order": None if self.order is None else self.order.cpu(), "position": self.position}

    def load_state_dict(self, state: dict[str, object]) -> None:
        order = state["order"]
        self.order = None if order is None else torch.as_tensor(order).to(self.batcher.device)
        self.position = int(state["position"])
