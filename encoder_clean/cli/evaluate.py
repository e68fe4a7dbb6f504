"""`encoder-clean evaluate`: downstream ACC and ASR of one or more encoders on frozen features."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from encoder_clean.cli.common import (ArchOption, PrefixOption, DataOption, DeviceOption, JsonOption, Output, QuietOption,
                                      SeedOption, about, handle_errors)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.data.specs import load_data
from encoder_clean.encoders.io import LoadedEncoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.metrics import evaluate_encoder
from encoder_clean.evaluate.probe import PROBES, probe_config
from encoder_clean.runtime import prepare_model, resolve_device, seed_everything
from encoder_clean.triggers import load_trigger

DEFAULT_TRIGGER = "white-square"
DEFAULT_TARGET = 0


@handle_errors
def evaluate(
    encoders: Annotated[list[str], typer.Argument(metavar="ENCODER...", help="Checkpoint files or hf://OWNER/REPO[/PATH][@REV].")],
    data: DataOption = "builtin",
    trigger: Annotated[Optional[str], typer.Option("--trigger", help="Trigger to stamp on test images (default: the checkpoint's, else white-square).")] = None,
    target_class: Annotated[Optional[int], typer.Option("--target-class", help="Attack target class K (default: the checkpoint's, else 0).")] = None,
    probe: Annotated[str, typer.Option("--probe", help=f"Downstream probe: {' or '.join(PROBES)}.")] = "linear",
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
    config = probe_config(probe, probe_epochs)
    torch_device = resolve_device(device)
    seed_everything(seed)
    loaded = [open_encoder(source, arch, prefix) for source in encoders]
    trigger_spec, target = _attack_settings(loaded, trigger, target_class)
    if target < 0:
        raise UserError(f"--target-class {target}: must be 0 or more")
    with about("--trigger", trigger_spec):  # at every encoder's input size, before any data is read
        stamps = {item.encoder.image_size: load_trigger(trigger_spec, item.encoder.image_size) for item in loaded}
    dataset = load_data(data, output.progress())
    if target >= dataset.num_classes:
        raise UserError(f"--target-class {target} is outside 0..{dataset.num_classes - 1} for {dataset.name}")
    rows = []
    for item in loaded:
        encoder = prepare_model(item.encoder, torch_device)
        result = evaluate_encoder(encoder, dataset, stamps[encoder.image_size], target, config, device=torch_device, seed=seed,
                                  progress=output.progress())
        rows.append({"source": item.source, "sha256": item.sha256, "arch": encoder.arch, **result.as_dict()})
    output.console.print(_table(rows, dataset.name, trigger_spec, target, probe))
    output.emit_json({"data": dataset.name, "trigger": trigger_spec, "target_class": target, "probe": probe,
                      "probe_epochs": config.epochs, "encoders": rows})


def _attack_settings(loaded: list[LoadedEncoder], trigger: str | None, target: int | None) -> tuple[str, int]:
    """Explicit options win; else what the checkpoints record (they must agree); else the defaults."""
    for key, given, default in (("trigger", trigger, DEFAULT_TRIGGER), ("target_class", target, DEFAULT_TARGET)):
        if given is not None:
            continue
        recorded = {str(item.setting(key)) for item in loaded if item.setting(key) is not None}
        if len(recorded) > 1:
            raise UserError(f"the encoders record different {key.replace('_', ' ')}s ({', '.join(sorted(recorded))}); "
                            f"pass --{key.replace('_', '-')}")
        if key == "trigger":
            trigger = recorded.pop() if recorded else default
        else:
            target = int(recorded.pop()) if recorded else default
    return str(trigger), int(target)


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
