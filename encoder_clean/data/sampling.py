"""The defender's clean subset and scan's shadow images: a seeded, class-balanced sample of a split.

Files are often stored in class order (an image folder is read class by class, many npz files are
sorted by label), so "the first 5% of the training split" can be a single class. Instead every image
gets a key, a keyed BLAKE2b hash of its pixels and the seed, and each class contributes its images with
the smallest keys. The sample therefore depends on the seed and on the images themselves, never on the
order they were stored in: shuffling the files gives the same images, another seed gives other ones.

Classes get equal shares of the sample; a class with fewer images than its share is taken whole, and
the images it lacks are shared out among the other classes, so the sample keeps its size whenever the
split is large enough.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from encoder_clean.data.dataset import Dataset, Split
from encoder_clean.errors import UserError


@dataclass
class Sample:
    """A class-balanced sample of a split, with what it took from each class."""

    split: Split
    index: Tensor  # positions in the source split, in sample order (ascending key)
    seed: int
    per_class: dict[int, int]  # class -> images taken (classes present in the source only)
    short_classes: list[int] = field(default_factory=list)  # classes taken whole, below their share
    sha256: str = ""  # of the sampled images and labels, in sample order

    def __len__(self) -> int:
        return len(self.split)

    def describe(self, class_names: list[str] | None = None) -> dict[str, object]:
        """What JSON results and checkpoint metadata record about the sample."""
        def name(label: int) -> str:
            return class_names[label] if class_names and label < len(class_names) else str(label)

        return {"size": len(self), "seed": self.seed, "sha256": self.sha256,
                "per_class": {name(label): count for label, count in sorted(self.per_class.items())},
                "short_classes": [name(label) for label in self.short_classes]}


def image_keys(images: Tensor, seed: int) -> list[bytes]:
    """One 16-byte key per image: BLAKE2b of its pixels, keyed by the seed."""
    salt = seed.to_bytes(8, "little", signed=True)
    pixels = images.detach().to("cpu").contiguous().numpy()
    return [hashlib.blake2b(image.tobytes(), digest_size=16, key=salt).digest() for image in pixels]


def class_quotas(available: dict[int, int], count: int, seed: int) -> dict[int, int]:
    """Split `count` over the classes as evenly as their sizes allow (water-filling).

    Where the count does not divide evenly, the seed decides which classes take one more image."""
    quotas = {label: 0 for label in available}
    open_classes = sorted(available)
    remaining = count
    order = torch.randperm(len(open_classes), generator=torch.Generator().manual_seed(seed)).tolist()
    rank = {label: order[i] for i, label in enumerate(open_classes)}
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        lucky = set(sorted(open_classes, key=rank.__getitem__)[:extra])
        for label in list(open_classes):
            room = available[label] - quotas[label]
            take = min(room, share + (label in lucky))
            quotas[label] += take
            remaining -= take
            if quotas[label] == available[label]:
                open_classes.remove(label)
    return quotas


def balanced_sample(split: Split, count: int, seed: int) -> Sample:
    """`count` images of `split` (all of it when it is smaller), equally from each class, by seed."""
    if count < 1:
        raise UserError(f"a sample needs at least one image, got {count}")
    labels = split.labels.to("cpu")
    keys = image_keys(split.images, seed)
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels.tolist()):
        by_class.setdefault(label, []).append(position)
    # Ties (duplicate images) fall back to the label, then to the position: equal keys mean equal pixels.
    for positions in by_class.values():
        positions.sort(key=lambda p: (keys[p], p))
    quotas = class_quotas({label: len(p) for label, p in by_class.items()}, min(count, len(split)), seed)
    chosen = [p for label, positions in by_class.items() for p in positions[:quotas[label]]]
    chosen.sort(key=lambda p: (keys[p], int(labels[p]), p))
    fair_share = min(count, len(split)) // max(1, len(by_class))
    short = sorted(label for label, positions in by_class.items() if len(positions) < fair_share)
    index = torch.tensor(chosen, dtype=torch.long)
    subset = split.subset(index.to(split.images.device))
    return Sample(subset, index, seed, {label: quotas[label] for label in sorted(by_class)}, short,
                  split_sha256(subset))


def fraction_count(total: int, fraction: float, flag: str = "--clean-fraction") -> int:
    """How many images `fraction` of `total` is (at least one)."""
    if not 0 < fraction <= 1:
        raise UserError(f"{flag} {fraction}: must be in (0, 1]")
    return max(1, int(round(total * fraction)))


def split_sha256(split: Split) -> str:
    digest = hashlib.sha256()
    digest.update(split.images.detach().to("cpu").contiguous().numpy().tobytes())
    digest.update(split.labels.detach().to("cpu").numpy().astype("<i8").tobytes())
    return digest.hexdigest()


def clean_subset(dataset: Dataset, fraction: float, seed: int) -> Sample:
    """The defender's clean data: a `fraction` of the training split, class-balanced, chosen by seed."""
    return balanced_sample(dataset.train, fraction_count(len(dataset.train), fraction), seed)
