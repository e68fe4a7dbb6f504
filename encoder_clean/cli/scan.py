"""`encoder-clean scan`: is this encoder backdoored? A verdict per encoder, with exit codes for CI gates.

Exit 0: every encoder looks clean; 1: at least one backdoor found; 2: bad input (nothing is judged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from encoder_clean import api
from encoder_clean.cli.common import (ArchOption, PrefixOption, DataOption, DeviceOption, JsonOption, Output, QuietOption,
                                      SeedOption, about, check_output, handle_errors)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.errors import UserError
from encoder_clean.options import describe_options
from encoder_clean.scan import list_methods, scan_config
from encoder_clean.scan.report import write_sarif, write_trigger_png
from encoder_clean.scan.verdict import BACKDOOR, ScanMethod, get_method

EXIT_BACKDOOR = 1


@handle_errors
def scan(
    encoders: Annotated[list[str], typer.Argument(metavar="ENCODER...", help="Checkpoint files or hf://OWNER/REPO[/PATH][@REV].")],
    data: DataOption = "builtin",
    shadow_images: Annotated[int, typer.Option("--shadow-images", help="Clean shadow images: a class-balanced sample of the training split of --data, drawn by --seed.")] = 1000,
    method: Annotated[str, typer.Option("--method", help=f"Scan method: {', '.join(list_methods())} (see `encoder-clean list scans`; `decree` = DECREE's published settings).")] = "encoder-clean",
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Backdoor when the score is above this (default: the method's; see `encoder-clean list scans`).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="Any setting of the method (steps, batch_size, lr, ...), repeatable.")] = None,
    trigger_out: Annotated[Optional[Path], typer.Option("--trigger-out", metavar="PNG", help="Write the inverted trigger (a shadow image stamped with it | stamp | mask | pattern) as a PNG; with several encoders, -N is added before .png.")] = None,
    sarif: Annotated[Optional[Path], typer.Option("--sarif", metavar="PATH", help="Also write a SARIF 2.1.0 log (.sarif or .json): a failing result per backdoor, a passing one per clean encoder (docs/sarif.md).")] = None,
    arch: ArchOption = None,
    prefix: PrefixOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Detect a backdoor from clean shadow images: is there a small patch that collapses the embeddings?

    The default method optimises one patch per window of a grid and flags the encoder when the best
    window collapses the shadow images' embeddings far beyond its other windows or its own clean
    agreement; `--method decree` inverts DECREE's smallest collapsing mask. Each verdict states its
    score, threshold and margin. Exit codes: 0 all clean, 1 a backdoor found, 2 bad input.
    """
    output = Output(json_path, quiet)
    with about("--method", method):
        chosen = get_method(method)
    config = scan_config(method, list(option or []))
    limit = chosen.threshold if threshold is None else threshold
    if limit != limit or limit in (float("inf"), float("-inf")):
        raise UserError(f"--threshold {limit}: must be a finite number")
    if shadow_images < 2:
        raise UserError(f"--shadow-images {shadow_images}: need at least 2")
    pngs = _trigger_paths(trigger_out, len(encoders))
    for path in pngs:
        check_output(path, ".png", "--trigger-out")
    if sarif is not None:
        check_output(sarif, (".sarif", ".json"), "--sarif")
    loaded = [open_encoder(source, arch, prefix) for source in encoders]  # all inputs checked first
    dataset = api.load_data(data, output.progress())
    settings = api.ScanConfig(method=method, threshold=limit, shadow_images=shadow_images, options=tuple(option or ()))

    results = [api.scan(item, dataset, settings, device=device, seed=seed, progress=output.progress())
               for item in loaded]
    # PNGs only once every encoder is scanned: a scan that fails partway leaves no output behind
    rows = [{**result.row(), "trigger_png": None} for result in results]
    for path, row, result in zip(pngs, rows, results):
        row["trigger_png"] = str(write_trigger_png(path, result.mask, result.pattern, example=result.example))

    backdoors = sum(row["verdict"] == BACKDOOR for row in rows)
    if sarif is not None:
        write_sarif(sarif, rows, output.started_at, EXIT_BACKDOOR if backdoors else 0)
    output.console.print(_table(rows, method, chosen))
    payload = {"method": method, "settings": describe_options(config), "data": data,
               "shadow_images": results[0].shadow_sample["size"], "shadow_sample": results[0].shadow_sample,
               "seconds": output.seconds, "verdict": BACKDOOR if backdoors else "clean",
               "summary": {"scanned": len(rows), "backdoor": backdoors, "clean": len(rows) - backdoors},
               "encoders": rows}
    if len(rows) == 1:  # one encoder: its verdict's fields at the top level too (docs/json.md)
        payload.update({key: rows[0][key] for key in ("source", "score", "threshold", "margin", "pl1_norm",
                                                       "trigger_png")})
    output.emit_json(payload)
    if backdoors:
        raise typer.Exit(EXIT_BACKDOOR)


def _trigger_paths(trigger_out: Path | None, count: int) -> list[Path]:
    if trigger_out is None:
        return []
    if count == 1:
        return [trigger_out]
    return [trigger_out.with_name(f"{trigger_out.stem}-{index + 1}{trigger_out.suffix}") for index in range(count)]


def _table(rows: list[dict], method: str, chosen: ScanMethod) -> Table:
    table = Table(title=f"scan ({method}): backdoor when the {chosen.score} is above the threshold")
    table.add_column("encoder", overflow="fold")
    for column in ("verdict", chosen.score, "threshold", "margin", "PL1-norm", "seconds"):
        table.add_column(column, justify="right")
    for row in rows:
        colour = "bold red" if row["verdict"] == BACKDOOR else "green"
        table.add_row(row["source"], f"[{colour}]{row['verdict']}[/]", f"{row['score']:.4f}",
                      f"{row['threshold']:.4f}", f"{row['margin']:+.4f}", f"{row['pl1_norm']:.4f}",
                      f"{row['seconds']:.1f}")
    return table
