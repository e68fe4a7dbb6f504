"""The registry of data formats: what a format registers (a loader, its usage line and a description) and
the helpers its loader uses to read the `?key=value` options of a spec. The format modules (builtin,
files, torchvision_sets) register themselves here; encoder_clean.data.specs imports them and reads specs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from encoder_clean.data.dataset import Dataset
from encoder_clean.errors import UserError
from encoder_clean.registry import Registry
from encoder_clean.runtime import Progress

Loader = Callable[[str, dict[str, str], Progress], Dataset]  # (argument, options, progress)
# (argument, options) -> the number of classes, found without decoding any image; None when unknown
ClassCounter = Callable[[str, dict[str, str]], "int | None"]


@dataclass(frozen=True)
class DataFormat:
    name: str
    loader: Loader
    usage: str
    description: str
    class_count: ClassCounter | None = None  # lets commands check --target-class before the slow read


FORMATS: Registry[DataFormat] = Registry("data format")


def register_format(name: str, loader: Loader, usage: str, description: str,
                    class_count: ClassCounter | None = None) -> None:
    FORMATS.register(name, DataFormat(name, loader, usage, description, class_count))


def take_int(options: dict[str, str], key: str, default: int, spec: str, low: int = 1,
             high: int = 10_000_000) -> int:
    """Pop an integer option, checking its range."""
    raw = options.pop(key, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"data spec {spec!r}: option {key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise UserError(f"data spec {spec!r}: option {key}={value} must be in {low}..{high}")
    return value


def reject_unknown(options: dict[str, str], spec: str) -> None:
    if options:
        raise UserError(f"data spec {spec!r}: unknown option(s) {', '.join(sorted(options))}")
