"""`encoder-clean list`: what the registries hold (architectures, triggers, data formats)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from encoder_clean.attacks import list_attacks
from encoder_clean.cli.common import Output
from encoder_clean.data.specs import list_formats
from encoder_clean.encoders import list_archs
from encoder_clean.options import describe_options
from encoder_clean.triggers import trigger_help


class What(str, Enum):
    archs = "archs"
    triggers = "triggers"
    data = "data"
    attacks = "attacks"


def list_registry(what: Annotated[What, typer.Argument(help="archs, triggers, data or attacks.")] = What.archs) -> None:
    """List the registered architectures, built-in triggers, data formats or attacks (with their presets)."""
    table = Table(show_header=True)
    if what is What.archs:
        table.add_column("architecture")
        table.add_column("input")
        table.add_column("description")
        for info in list_archs():
            table.add_row(info.name, f"{info.image_size} px", info.description)
    elif what is What.triggers:
        table.add_column("trigger")
        table.add_column("description")
        for usage, text in trigger_help().items():
            table.add_row(usage, text)
    elif what is What.attacks:
        table.add_column("attack")
        table.add_column("description")
        table.add_column("preset")
        table.add_column("settings (--option KEY=VALUE)")
        for name, attack in list_attacks().items():
            for index, (preset, config) in enumerate(attack.presets.items()):
                settings = " ".join(f"{k}={v}" for k, v in describe_options(config).items())
                table.add_row(name if index == 0 else "", attack.description if index == 0 else "",
                              preset, settings)
    else:
        table.add_column("spec")
        table.add_column("description")
        for fmt in list_formats():
            table.add_row(fmt.usage, fmt.description)
    Output(None, True).console.print(table)
