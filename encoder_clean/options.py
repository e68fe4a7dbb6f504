"""Typed `KEY=VALUE` options for the settings of registered methods (attacks, defenses, losses).

Each method declares its settings as a frozen dataclass whose defaults are the published ones; the CLI
exposes them as repeatable `--option KEY=VALUE` flags, parsed and validated here against the
dataclass's field types, so adding a setting to a method needs no CLI change.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Iterable, Mapping, TypeVar

from encoder_clean.errors import UserError

Config = TypeVar("Config")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, text: str, kind: Any) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise UserError(f"option {name}={text!r}: expected true or false")
    if kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            raise UserError(f"option {name}={text!r}: expected {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise UserError(f"option {name}={text!r}: must be finite")
        return value
    if kind is str:
        return text
    raise UserError(f"option {name} cannot be set from the command line")


# Settings that mean the same in every method, and the values that can make sense for them: a value
# outside is refused when the option is read, before any data is, instead of minutes later in a loop.
_AT_LEAST_ONE = ("epochs", "batch_size", "num_references", "steps")
_POSITIVE = ("lr", "temperature")
_NON_NEGATIVE = ("weight_decay",)


def _check_range(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if (name in _AT_LEAST_ONE or name.endswith("_epochs")) and value < 1:
        raise UserError(f"option {name}={value}: must be at least 1")
    if (name in _POSITIVE or name.endswith("_lr")) and value <= 0:
        raise UserError(f"option {name}={value}: must be greater than 0")
    if name in _NON_NEGATIVE and value < 0:
        raise UserError(f"option {name}={value}: must not be negative")


def field_types(config_type: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_type) if f.init}


def apply_options(config: Config, assignments: Iterable[str], what: str) -> Config:
    """Return `config` with each `KEY=VALUE` applied (keys may use '-' for '_')."""
    types = field_types(type(config))
    changes: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"option {assignment!r}: expected KEY=VALUE")
        if key not in types:
            known = ", ".join(sorted(types)) or "none"
            raise UserError(f"{what} has no option {key!r}; known: {known}")
        changes[key] = _convert(key, text.strip(), types[key])
        _check_range(key, changes[key])
    return dataclasses.replace(config, **changes) if changes else config  # type: ignore[type-var]


def describe_options(config: object) -> dict[str, object]:
    """The settings of `config` as plain values, for metadata, JSON and `list`."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}  # type: ignore[arg-type]


def to_assignments(settings: Mapping[str, object] | Iterable[str] | None) -> list[str]:
    """Settings given as a mapping (None values left out) or as `KEY=VALUE` strings, as `KEY=VALUE` strings."""
    if settings is None:
        return []
    if isinstance(settings, str):
        return [settings]
    if isinstance(settings, Mapping):
        return [f"{key}={value}" for key, value in settings.items() if value is not None]
    return [str(item) for item in settings]
