"""`encoder-clean evaluate`: downstream ACC and ASR of one or more encoders on frozen features."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from encoder_clean import api
from encoder_clean.cli.common import (ArchOption, PrefixOption, DataOption, DeviceOption, JsonOption, Output, QuietOption,
                                      SeedOption, about, handle_errors)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.probe import list_probes, probe_config


@handle_errors
def evaluate(
    encoders: Annotated[list[str], typer.Argument(metavar="ENCODER...", help="Checkpoint files or hf://OWNER/REPO[/PATH][@REV].")],
    data: DataOption = "builtin",
    trigger: Annotated[Optional[str], typer.Option("--trigger", help="Trigger to stamp on test images (default: the checkpoint's, else white-square).")] = None,
    target_class: Annotated[Optional[int], typer.Option("--target-class", help="Attack target class K (default: the checkpoint's, else 0).")] = None,
    probe: Annotated[str, typer.Option("--probe", help=f"Downstream probe: {' or '.join(list_probes())}.")] = "linear",
    probe_epochs: Annotated[Optional[int], typer.Option("--probe-epochs", help="MLP probe: training epochs (default 100; the papers use 500). Linear probe: L-BFGS iterations (default 100).")] = None,
    arch: ArchOption = None,
    prefix: PrefixOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train a probe on frozen features; report clean accuracy (ACC) and attack success rate (ASR).

    Features of each split are computed once per encoder and cached; ASR counts triggered test images
    classified as the target class, over all test images and over non-target images only.
    """
    output = Output(json_path, quiet)
    with about("--probe-epochs", probe_epochs):
        probe_config(probe, probe_epochs)
    loaded = [open_encoder(source, arch, prefix) for source in encoders]
    if target_class is not None and target_class < 0:
        raise UserError(f"--target-class {target_class}: must be 0 or more")
    # What the checkpoints record fills in the options not given; the trigger is checked before any data is read.
    trigger_spec, target = api.attack_settings(loaded, trigger, target_class)
    with about("--trigger", trigger_spec):
        api.trigger_stamps(trigger_spec, loaded)
    config = api.EvalConfig(trigger=trigger_spec, target_class=target, probe=probe, probe_epochs=probe_epochs)
    result = api.evaluate(loaded, data, config, device=device, seed=seed, progress=output.progress())
    rows = [row.as_dict() for row in result.encoders]
    output.console.print(_table(rows, result.data, result.trigger, result.target_class, probe))
    output.emit_json(result.as_dict())


def _table(rows: list[dict], data: str, trigger: str, target: int, probe: str) -> Table:
    table = Table(title=f"{data} · trigger {trigger} · target class {target} · {probe} probe")
    table.add_column("encoder", overflow="fold")
    table.add_column("arch")
    for name in ("ACC %", "ASR %", "ASR non-target %"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(row["source"], row["arch"], f"{row['acc']:.2f}", f"{row['asr']:.2f}",
                      f"{row['asr_nontarget']:.2f}")
    return table
