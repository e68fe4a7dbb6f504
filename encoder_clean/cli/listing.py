"""`encoder-clean list`: what the registries hold (architectures, triggers, data formats)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from encoder_clean.cli.common import Output
from encoder_clean.data.specs import list_formats
from encoder_clean.encoders import list_archs
from encoder_clean.triggers import builtin_trigger_names


class What(str, Enum):
    archs = "archs"
    triggers = "triggers"
    data = "data"


def list_registry(what: Annotated[What, typer.Argument(help="archs, triggers or data.")] = What.archs) -> None:
    """List the registered architectures, built-in triggers or data formats."""
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
        for name, text in builtin_trigger_names().items():
            table.add_row(name, text)
    else:
        table.add_column("spec")
        table.add_column("description")
        for fmt in list_formats():
            table.add_row(fmt.usage, fmt.description)
    Output(None, True).console.print(table)
