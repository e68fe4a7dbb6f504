"""`encoder-clean demo`: the whole pipeline on built-in data in a few minutes on a CPU.

Pre-train a clean encoder on builtin:shapes, poison it with BadEncoder (references from builtin:glyphs,
the downstream family), clean it with the recommended `distill` recipe on the defender's 5% clean
subset of shapes, and evaluate all three on glyphs. Writes the three checkpoints and a report folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from encoder_clean import api
from encoder_clean.cli.common import (DeviceOption, JsonOption, Output, QuietOption, SeedOption, check_output,
                                      handle_errors)
from encoder_clean.cli.pretrain import DEFAULT_ARCH
from encoder_clean.errors import UserError
from encoder_clean.evaluate.report import write_report
from encoder_clean.runtime import cpu_bf16, resolve_device

# Sized for the 3-minute budget on 2 CPU cores (bf16 where the CPU has it; benchmarks/RESULTS.md has the run).
PRETRAIN_DATA = "builtin:shapes?train=6000&test=100"
DOWNSTREAM_DATA = "builtin:glyphs?train=3000&test=1000"
PRETRAIN_EPOCHS = 3
POISON_SETTINGS = {"epochs": 4}  # over the BadEncoder `fast` preset
TRIGGER = "white-square"
TARGET_CLASS = 0
CLEAN_FRACTION = 0.05
REPORT_FILES = ("report.json", "summary.md", "acc.png", "asr.png")  # what evaluate.report.write_report writes
RECIPE_OPTIONS: tuple[str, ...] = ()  # extra distill settings (tests shrink the run with them)
FINETUNE_OPTIONS: tuple[str, ...] = ()  # extra settings of the teacher's purify method
RECIPE_KEYS = ("finetune", "finetune_settings", "student", "student_arch", "losses", "distill_settings")


@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for the checkpoints and the report (created).")] = Path("encoder-clean-demo"),
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    fp32: Annotated[bool, typer.Option("--fp32", help="Exact fp32 on the CPU (slower); by default the demo computes in bf16 where the CPU does so natively.")] = False,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Pretrain, poison (BadEncoder), clean (recommended distill) and evaluate, on built-in data.

    Writes clean/poisoned/cleaned .safetensors and a report folder (report.json, summary.md, acc.png,
    asr.png) under --out-dir, and prints the before/after table.
    """
    output = Output(json_path, quiet)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir}: is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out-dir {out_dir}: cannot create it ({error.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise UserError(f"--out-dir {out_dir}: is not writable")
    report = out_dir / "report"
    if report.exists() and not report.is_dir():
        raise UserError(f"--out-dir {out_dir}: {report} is not a folder")
    # every file it writes, regular files or nothing, before any work
    for path in [out_dir / f"{name}.safetensors" for name in ("clean", "poisoned", "cleaned")] + [
            report / name for name in REPORT_FILES if report.is_dir()]:
        check_output(path, path.suffix, "--out-dir")
    torch_device = resolve_device(device)
    with cpu_bf16(not fp32) as bf16_on_cpu:
        _run(out_dir, torch_device, seed, output, bf16_on_cpu or torch_device.type == "cuda")


def _run(out_dir: Path, device: torch.device, seed: int, output: Output, bf16: bool) -> None:
    precision = "bf16" if bf16 else "fp32"
    progress = output.progress()
    pretraining, downstream = api.load_data(PRETRAIN_DATA), api.load_data(DOWNSTREAM_DATA)
    run = {"device": device, "seed": seed, "progress": progress}

    clean = api.pretrain(pretraining, api.PretrainConfig(arch=DEFAULT_ARCH, epochs=PRETRAIN_EPOCHS), **run)
    poisoned = api.poison(clean, pretraining, api.PoisonConfig(
        attack="badencoder", trigger=TRIGGER, target_class=TARGET_CLASS, reference_data=downstream, **POISON_SETTINGS),
        **run)
    cleaned = api.distill(poisoned, pretraining, api.DistillConfig(
        clean_fraction=CLEAN_FRACTION, options=RECIPE_OPTIONS, finetune_options=FINETUNE_OPTIONS), **run)
    results = {"clean": clean, "poisoned": poisoned, "cleaned": cleaned}
    for name, result in results.items():
        _with_precision(result, precision).save(out_dir / f"{name}.safetensors")

    report = api.evaluate(list(results.values()), downstream, api.EvalConfig(trigger=TRIGGER, target_class=TARGET_CLASS),
                          **run)
    rows = [{"name": name, "checkpoint": str(out_dir / f"{name}.safetensors"), **row.as_dict(),
             "seconds": round(result.seconds, 1)}
            for (name, result), row in zip(results.items(), report.encoders)]
    for row in rows:
        for key in ("source", "sha256", "arch"):
            row.pop(key)
    recipe = {key: cleaned.report[key] for key in RECIPE_KEYS if key in cleaned.report}
    payload = {"pretrain_data": PRETRAIN_DATA, "downstream_data": DOWNSTREAM_DATA, "arch": DEFAULT_ARCH,
               "attack": "badencoder", "trigger": TRIGGER, "target_class": TARGET_CLASS,
               "recipe": recipe, "precision": precision, "seconds": output.seconds, "encoders": rows}
    folder = out_dir / "report"
    write_report(folder, payload, rows, "encoder-clean demo: BadEncoder before and after distillation", [
        f"Pre-trained on `{PRETRAIN_DATA}`, evaluated with a linear probe on `{DOWNSTREAM_DATA}`; "
        f"trigger `{TRIGGER}`, target class {TARGET_CLASS}; cleaned with `distill` defaults "
        f"({', '.join(recipe['losses'])}, student {recipe['student']}) on "
        f"{cleaned.report['clean_images']} clean images."])
    output.console.print(_table(rows))
    output.console.print(f"checkpoints and report in [bold]{out_dir}[/] ({output.seconds:.0f} s)", soft_wrap=True)
    output.emit_json({**payload, "report": str(folder)})


def _with_precision(result: api.TrainResult, precision: str) -> api.TrainResult:
    """The result with the demo's precision recorded beside its settings (bf16 runs differ from fp32 ones)."""
    provenance = dataclasses.replace(result.provenance, settings={**result.provenance.settings, "precision": precision})
    return dataclasses.replace(result, provenance=provenance)


def _table(rows: list[dict]) -> Table:
    table = Table(title="demo: BadEncoder, before and after cleaning (downstream: glyphs)")
    for column in ("encoder", "ACC %", "ASR %", "ASR non-target %", "seconds"):
        table.add_column(column, justify="left" if column == "encoder" else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['acc']:.2f}", f"{row['asr']:.2f}", f"{row['asr_nontarget']:.2f}",
                      f"{row['seconds']:.1f}")
    return table
