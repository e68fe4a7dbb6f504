"""`encoder-clean list`: what the registries hold (architectures, triggers, data formats, pre-training
methods, attacks, defenses, students, losses, scan methods)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Callable

import typer
from rich.table import Table

from encoder_clean.attacks import list_attacks
from encoder_clean.cli.common import JsonOption, Output
from encoder_clean.data.specs import list_formats
from encoder_clean.defenses import list_defenses
from encoder_clean.distill.losses import list_losses
from encoder_clean.distill.recipe import FAMILY_RECIPES
from encoder_clean.distill.students import list_students
from encoder_clean.distill.trainer import DistillConfig
from encoder_clean.encoders import list_archs
from encoder_clean.options import describe_options
from encoder_clean.pretrain import list_methods
from encoder_clean.scan import list_methods as list_scan_methods
from encoder_clean.triggers import trigger_help


def _settings(config: object) -> str:
    return " ".join(f"{k}={v}" for k, v in describe_options(config).items())


def _archs() -> Table:
    table = _table("architecture", "input", "description")
    for info in list_archs():
        table.add_row(info.name, f"{info.image_size} px", info.description)
    return table


def _triggers() -> Table:
    table = _table("trigger", "description")
    for usage, text in trigger_help().items():
        table.add_row(usage, text)
    return table


def _data() -> Table:
    table = _table("spec", "description")
    for fmt in list_formats():
        table.add_row(fmt.usage, fmt.description)
    return table


def _methods() -> Table:
    table = _table("method", "description", "settings (pretrain --option KEY=VALUE)")
    for name, method in list_methods().items():
        table.add_row(name, method.description, _settings(method.defaults))
    return table


def _attacks() -> Table:
    table = _table("attack", "description", "preset", "settings (--option KEY=VALUE)")
    for name, attack in list_attacks().items():
        for index, (preset, config) in enumerate(attack.presets.items()):
            table.add_row(name if index == 0 else "", attack.description if index == 0 else "", preset,
                          _settings(config))
    return table


def _defenses() -> Table:
    table = _table("method", "description", "settings (purify --option / distill --finetune-option)")
    for name, defense in list_defenses().items():
        table.add_row(name, defense.description, _settings(defense.defaults))
    return table


def _students() -> Table:
    table = _table("student", "description")
    for name, student in list_students().items():
        families = [family for family, recipe in FAMILY_RECIPES.items() if recipe.student == name]
        table.add_row(name + (f" (default: {', '.join(families)})" if families else ""), student.description)
    return table


def _losses() -> Table:
    table = _table("loss", "group", "default weight", "default taps", "description")
    for name, kind in list_losses().items():
        taps = kind.default_taps if isinstance(kind.default_taps, str) else ",".join(kind.default_taps)
        table.add_row(name, kind.group, f"{kind.default_weight:g}", taps, kind.description)
    table.caption = f"distill --option KEY=VALUE settings: {_settings(DistillConfig())}"
    return table


def _scans() -> Table:
    table = _table("scan method", "description", "score > threshold = backdoor", "settings (scan --option KEY=VALUE)")
    for name, method in list_scan_methods().items():
        table.add_row(name, method.description, f"{method.score} > {method.threshold:g} ({method.calibration})",
                      _settings(method.config))
    return table


def _table(*columns: str) -> Table:
    table = Table(show_header=True)
    for column in columns:
        table.add_column(column)
    return table


LISTERS: dict[str, Callable[[], Table]] = {
    "archs": _archs, "triggers": _triggers, "data": _data, "methods": _methods, "attacks": _attacks,
    "defenses": _defenses, "students": _students, "losses": _losses, "scans": _scans,
}
What = Enum("What", {name: name for name in LISTERS}, type=str)  # type: ignore[misc]


def _rows(table: Table) -> list[dict[str, str]]:
    """A listing's rows as JSON objects: the first column is `name`, each other is keyed by the words of its
    header before any parenthesis ("default weight" -> default_weight); a row with a blank name continues
    the one above (an attack's further presets), whose blank cells it takes."""
    keys = ["name"] + ["_".join(re.findall(r"[a-z0-9]+", str(column.header).split(" (")[0].lower()))
                       for column in table.columns[1:]]
    rows: list[dict[str, str]] = []
    for cells in zip(*(list(column.cells) for column in table.columns)):
        row = dict(zip(keys, map(str, cells)))
        if not row["name"] and rows:
            row = {key: value or rows[-1][key] for key, value in row.items()}
        rows.append(row)
    return rows


def list_registry(
    what: Annotated[What, typer.Argument(help=", ".join(LISTERS) + ".")] = "archs",  # type: ignore[assignment]
    json_path: JsonOption = None,
) -> None:
    """List a registry: architectures, built-in triggers, data formats, pre-training methods, attacks (with
    presets), teacher defenses, students, distillation losses (with their defaults) or scan methods."""
    name = What(what).value
    output = Output(json_path, True)
    table = LISTERS[name]()
    output.console.print(table)
    output.emit_json({"what": name, "items": _rows(table)})
