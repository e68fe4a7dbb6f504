"""Data specs: `FORMAT[:ARGUMENT][?key=value&...]` -> Dataset, through a registry of formats.

Examples: `builtin`, `builtin:glyphs`, `builtin:shapes?train=2000&test=500`, `cifar10:/data/cifar`,
`npz:/data/badencoder/cifar10`, `folder:/data/pets?size=64`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

# Importing the format modules registers their formats (encoder_clean.data.formats).
from encoder_clean.data import builtin as _builtin, files as _files, torchvision_sets as _torchvision_sets  # noqa: F401
from encoder_clean.data.dataset import Dataset
from encoder_clean.data.formats import FORMATS, DataFormat
from encoder_clean.errors import UserError
from encoder_clean.runtime import NULL_PROGRESS, Progress


def list_formats() -> list[DataFormat]:
    return list(FORMATS.items().values())


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


def check_spec(spec: str) -> tuple[DataFormat, str, dict[str, str]]:
    """The format, argument and options of a spec whose syntax and format name are right (nothing is read);
    a UserError otherwise, so that commands can check every spec they were given before reading any."""
    name, argument, options = parse_spec(spec)
    formats = FORMATS.items()
    if name not in formats:
        raise UserError(f"unknown data format {name!r} in {spec!r}; known: {', '.join(formats)}")
    return formats[name], argument, options


def class_count(spec: str) -> int | None:
    """The number of classes of the data a spec names, found without decoding its images (a folder's
    class folders, an npz file's labels); None when the format cannot tell cheaply or the spec is bad
    (`load_data` then says what is wrong)."""
    try:
        data_format, argument, options = check_spec(spec)
    except UserError:
        return None
    if data_format.class_count is None:
        return None
    try:
        return data_format.class_count(argument, options)
    except Exception:  # a broken spec or file is reported by load_data, in its own words
        return None


def load_data(spec: str, progress: Progress = NULL_PROGRESS) -> Dataset:
    """Read the dataset a spec names; every failure a user can cause is a one-line UserError.

    Formats that decode image files report each split on `progress` as they go."""
    data_format, argument, options = check_spec(spec)
    dataset = data_format.loader(argument, options, progress)
    dataset.name = spec
    return dataset
