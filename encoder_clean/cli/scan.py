"""`encoder-clean scan`: is this encoder backdoored? A verdict per encoder, with exit codes for CI gates.

Exit 0: every encoder looks clean; 1: at least one backdoor found; 2: bad input (nothing is judged).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from encoder_clean.cli.common import (ArchOption, PrefixOption, DataOption, DeviceOption, JsonOption, Output, QuietOption,
                                      SeedOption, check_output, handle_errors)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.data.sampling import balanced_sample
from encoder_clean.data.specs import load_data
from encoder_clean.errors import UserError
from encoder_clean.options import apply_options, describe_options
from encoder_clean.runtime import prepare_model, resolve_device, seed_everything
from encoder_clean.scan.invert import invert_trigger
from encoder_clean.scan.report import write_sarif, write_trigger_png
from encoder_clean.scan.verdict import BACKDOOR, PRESETS, get_preset, score_for, verdict_for

EXIT_BACKDOOR = 1


@handle_errors
def scan(
    encoders: Annotated[list[str], typer.Argument(metavar="ENCODER...", help="Checkpoint files or hf://OWNER/REPO[/PATH][@REV].")],
    data: DataOption = "builtin",
    shadow_images: Annotated[int, typer.Option("--shadow-images", help="Clean shadow images: a class-balanced sample of the training split of --data, drawn by --seed.")] = 1000,
    method: Annotated[str, typer.Option("--method", help=f"Inversion settings: {', '.join(PRESETS)} (`decree` = the published ones).")] = "encoder-clean",
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Backdoor when the PL1-norm is below this (default: the method's, calibrated on clean encoders).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="Any inversion setting (steps, batch_size, lr, restarts, ...), repeatable.")] = None,
    trigger_out: Annotated[Optional[Path], typer.Option("--trigger-out", metavar="PNG", help="Write the inverted trigger (stamp | mask | pattern) as a PNG; with several encoders, -N is added before .png.")] = None,
    sarif: Annotated[Optional[Path], typer.Option("--sarif", metavar="PATH", help="Also write a SARIF 2.1.0 log (.sarif or .json): a failing result per backdoor, a passing one per clean encoder (docs/sarif.md).")] = None,
    arch: ArchOption = None,
    prefix: PrefixOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Detect a backdoor by trigger inversion (DECREE-style) on clean shadow images.

    Searches for the smallest mask and pattern that make the encoder give every shadow image nearly the
    same embedding. Backdoored encoders need a small mask (their trigger); clean ones need most of the
    image. Exit codes: 0 all clean, 1 a backdoor found, 2 bad input.
    """
    output = Output(json_path, quiet)
    preset = get_preset(method)
    config = apply_options(preset.config, list(option or []), f"scan --method {method}")
    config.check()
    limit = preset.threshold if threshold is None else threshold
    if not 0 < limit < 1:
        raise UserError(f"--threshold {limit}: must be in (0, 1)")
    if shadow_images < 2:
        raise UserError(f"--shadow-images {shadow_images}: need at least 2")
    pngs = _trigger_paths(trigger_out, len(encoders))
    for path in pngs:
        check_output(path, ".png", "--trigger-out")
    if sarif is not None:
        check_output(sarif, (".sarif", ".json"), "--sarif")
    torch_device = resolve_device(device)
    loaded = [open_encoder(source, arch, prefix) for source in encoders]  # all inputs checked first
    dataset = load_data(data, output.progress())
    sample = balanced_sample(dataset.train, shadow_images, seed)
    shadow, shadow_sample = sample.split.images, sample.describe(dataset.class_names)
    if len(shadow) < 2:
        raise UserError(f"--data {data}: fewer than 2 training images")

    rows = []
    for index, item in enumerate(loaded):
        seed_everything(seed)
        started = time.perf_counter()
        encoder = prepare_model(item.encoder, torch_device)
        found = invert_trigger(encoder, shadow, config, device=torch_device, seed=seed, progress=output.progress())
        row = {"source": item.source, "sha256": item.sha256, "arch": encoder.arch,
               "verdict": verdict_for(found.pl1_norm, limit), "score": score_for(found.pl1_norm),
               "threshold": limit, "pl1_norm": round(found.pl1_norm, 6), "target_reached": found.reached,
               "similarity": round(found.similarity, 4), "clean_similarity": round(found.baseline_similarity, 4),
               "similarity_target": round(found.target, 4),
               "restarts_pl1": [round(v, 6) for v in found.restarts_pl1], "trigger_png": None,
               "seconds": round(time.perf_counter() - started, 2)}
        if pngs:
            row["trigger_png"] = str(write_trigger_png(pngs[index], found.mask, found.pattern))
        rows.append(row)

    backdoors = sum(row["verdict"] == BACKDOOR for row in rows)
    if sarif is not None:
        write_sarif(sarif, rows, output.started_at, EXIT_BACKDOOR if backdoors else 0)
    output.console.print(_table(rows, method))
    payload = {"method": method, "settings": describe_options(config), "data": data, "shadow_images": len(shadow),
               "shadow_sample": shadow_sample,
               "seconds": output.seconds, "verdict": BACKDOOR if backdoors else "clean",
               "summary": {"scanned": len(rows), "backdoor": backdoors, "clean": len(rows) - backdoors},
               "encoders": rows}
    if len(rows) == 1:  # DESIGN.md's single-encoder fields at the top level too
        payload.update({key: rows[0][key] for key in ("source", "score", "threshold", "pl1_norm", "trigger_png")})
    output.emit_json(payload)
    if backdoors:
        raise typer.Exit(EXIT_BACKDOOR)


def _trigger_paths(trigger_out: Path | None, count: int) -> list[Path]:
    if trigger_out is None:
        return []
    if count == 1:
        return [trigger_out]
    return [trigger_out.with_name(f"{trigger_out.stem}-{index + 1}{trigger_out.suffix}") for index in range(count)]


def _table(rows: list[dict], method: str) -> Table:
    table = Table(title=f"scan ({method}): backdoor when the PL1-norm of the smallest collapsing mask < threshold")
    table.add_column("encoder", overflow="fold")
    for column in ("verdict", "PL1-norm", "threshold", "similarity", "seconds"):
        table.add_column(column, justify="right")
    for row in rows:
        colour = "bold red" if row["verdict"] == BACKDOOR else "green"
        table.add_row(row["source"], f"[{colour}]{row['verdict']}[/]", f"{row['pl1_norm']:.4f}",
                      f"{row['threshold']:.4f}", f"{row['similarity']:.3f}", f"{row['seconds']:.1f}")
    return table
