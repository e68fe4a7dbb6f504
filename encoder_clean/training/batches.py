"""Batches as slices of an on-device random permutation, one epoch after another (no DataLoader)."""

from __future__ import annotations

import torch

from encoder_clean.errors import UserError
from encoder_clean.parallel import local_rows, world


class EpochBatcher:
    """Yield index tensors of `batch_size` over `count` samples, reshuffled every epoch.

    Incomplete last batches are dropped (contrastive losses want full batches), unless the data holds
    fewer samples than one batch, in which case the batch shrinks to the data. In a data-parallel run
    the batch is global: every rank draws the same order and takes its share of each batch.
    """

    def __init__(self, count: int, batch_size: int, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        if count < 2:
            raise UserError(f"need at least 2 training images, got {count}")
        if batch_size < 2:
            raise UserError(f"batch size must be at least 2, got {batch_size}")
        ranks = world().size
        if batch_size % ranks:
            raise UserError(f"batch size {batch_size} is not a multiple of the {ranks} data-parallel processes")
        self.count = count
        self.batch_size = min(batch_size, count - count % ranks)
        if self.batch_size < 2 * ranks:
            raise UserError(f"{count} training images are too few for {ranks} data-parallel processes")
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
        return local_rows(batch)

    def state_dict(self) -> dict[str, object]:
        return {"order": None if self.order is None else self.order.cpu(), "position": self.position}

    def load_state_dict(self, state: dict[str, object]) -> None:
        order = state["order"]
        self.order = None if order is None else torch.as_tensor(order).to(self.batcher.device)
        self.position = int(state["position"])
