"""The in-memory dataset every command works on: uint8 NCHW images and int64 labels per split."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from encoder_clean.errors import UserError


MAX_CLASSES = 100_000  # beyond any real label set; guards against labels like 2**40 in a hostile file

@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 3, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise UserError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise UserError(f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass
class Dataset:
    """A named dataset with a train and a test split, 3-channel square-or-not uint8 images."""

    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise UserError(f"data {self.name}: {self.num_classes} classes; at most {MAX_CLASSES:,} are supported")
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise UserError(f"data {self.name}: the {split_name} split is empty")
            if int(split.labels.min()) < 0 or int(split.labels.max()) >= self.num_classes:
                raise UserError(f"data {self.name}: {split_name} labels outside 0..{self.num_classes - 1}")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise UserError(f"data {self.name}: train and test images differ in shape")
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.name, self.train.to(device), self.test.to(device), self.num_classes,
                       list(self.class_names))
