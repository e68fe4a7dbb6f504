"""Architecture registry: names -> builders, in the manner of timm's `create_model`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from encoder_clean.registry import Registry

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchInfo:
    name: str
    builder: Callable[..., "object"]
    description: str
    image_size: int = 32
    mean: tuple[float, ...] = CIFAR_MEAN
    std: tuple[float, ...] = CIFAR_STD
    kwargs: dict = field(default_factory=dict)


_ARCHS: Registry[ArchInfo] = Registry("architecture")


def register_arch(name: str, builder: Callable[..., object], description: str, *, image_size: int = 32,
                  mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD, **kwargs) -> None:
    _ARCHS.register(name, ArchInfo(name, builder, description, image_size, tuple(mean), tuple(std), dict(kwargs)))


def get_arch(name: str) -> ArchInfo:
    return _ARCHS.get(name)


def list_archs() -> list[ArchInfo]:
    return list(_ARCHS.items().values())


def create_encoder(name: str, *, image_size: int | None = None, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, head: bool = True):
    """Build a randomly initialised encoder by registered name (with a SimCLR head unless head=False)."""
    info = get_arch(name)
    encoder = info.builder(
        arch=name,
        image_size=int(image_size or info.image_size),
        mean=tuple(mean) if mean is not None else info.mean,
        std=tuple(std) if std is not None else info.std,
        **info.kwargs,
    )
    if head:
        encoder.add_head()
    return encoder
