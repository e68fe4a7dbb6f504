"""Data specs: `FORMAT[:ARGUMENT][?key=value&...]` -> Dataset, through a registry of formats.

Examples: `builtin`, `builtin:glyphs`, `builtin:shapes?train=2000&test=500`, `cifar10:/data/cifar`,
`npz:/data/badencoder/cifar10`, `folder:/data/pets?size=64`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qsl

from encoder_clean.data.dataset import Dataset
from encoder_clean.errors import UserError
from encoder_clean.runtime import NULL_PROGRESS, Progress

Loader = Callable[[str, dict[str, str], Progress], Dataset]  # (argument, options, progress)


@dataclass(frozen=True)
class DataFormat:
    name: str
    loader: Loader
    usage: str
    description: str


_FORMATS: dict[str, DataFormat] = {}


def register_format(name: str, loader: Loader, usage: str, description: str) -> None:
    if name in _FORMATS:
        raise ValueError(f"data format {name!r} registered twice")
    _FORMATS[name] = DataFormat(name, loader, usage, description)


def list_formats() -> list[DataFormat]:
    _import_builtin_formats()
    return [_FORMATS[k] for k in sorted(_FORMATS)]


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    spec = (spec or "").strip()
    if not spec:
        raise UserError("empty data spec")
    body, _, query = spec.partition("?")
    name, _, argument = body.partition(":")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UserError(f"data spec {spec!r}: options must look like ?key=value&key=value") from None
    return name.strip().lower(), argument, options


def load_data(spec: str, progress: Progress = NULL_PROGRESS) -> Dataset:
    """Read the dataset a spec names; every failure a user can cause is a one-line UserError.

    Formats that decode image files report each split on `progress` as they go."""
    _import_builtin_formats()
    name, argument, options = parse_spec(spec)
    if name not in _FORMATS:
        raise UserError(f"unknown data format {name!r} in {spec!r}; known: {', '.join(sorted(_FORMATS))}")
    dataset = _FORMATS[name].loader(argument, dict(options), progress)
    dataset.name = spec
    return dataset


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


def _import_builtin_formats() -> None:
    # Each module registers its formats on import.
    from encoder_clean.data import builtin, files, torchvision_sets  # noqa: F401
