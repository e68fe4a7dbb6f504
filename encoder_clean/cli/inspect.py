"""`encoder-clean inspect`: what a checkpoint holds, before anyone trusts it (nothing is run)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from encoder_clean.cli.common import ArchOption, JsonOption, Output, PrefixOption, handle_errors
from encoder_clean.encoders.describe import CheckpointReport, describe_checkpoint
from encoder_clean.errors import UserError


@handle_errors
def inspect(
    encoder: Annotated[str, typer.Argument(metavar="ENCODER", help="Checkpoint file, model folder or hf://OWNER/REPO[/PATH][@REV].")],
    arch: ArchOption = None,
    prefix: PrefixOption = None,
    json_path: JsonOption = None,
) -> None:
    """Show a checkpoint's format, architecture and how it was recognised, input size and normalisation,
    feature size, layer taps, parameter count, SHA-256 and provenance, without running the model.

    Pickled files are read weights-only: nothing but tensors and plain containers is built. Exit 2 when
    the file is unreadable or holds no encoder that can be loaded (the facts that could be read are still
    shown).
    """
    output = Output(json_path, quiet=True)
    report = describe_checkpoint(encoder, arch, prefix)
    output.console.print(_table(report))
    output.emit_json(report.as_dict())
    if report.error:
        raise UserError(report.error)


def _table(report: CheckpointReport) -> Table:
    table = Table(title=f"inspect {report.source}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [("format", report.format), ("bytes", report.bytes), ("sha256", report.sha256),
            ("tensors in file", report.tensors), ("architecture", report.arch),
            ("recognised by", report.recognised_by), ("layout", report.layout), ("input size", report.image_size),
            ("mean / std", f"{report.mean} / {report.std}" if report.mean else None),
            ("feature size", report.feature_dim), ("layer taps", ", ".join(report.taps) or None),
            ("parameters", f"{report.parameters:,}" if report.parameters is not None else None),
            ("projection head", report.projection_head),
            ("objects not built", ", ".join(report.pickled_classes) or None),
            *((key, value) for key, value in report.provenance.items()),
            *((f"setting {key}", value) for key, value in report.settings.items()),
            ("cannot load", report.error)]
    for name, value in rows:
        if value not in (None, ""):
            table.add_row(name, str(value))
    return table
