"""`encoder-clean demo`: the whole pipeline on built-in data in a few minutes on a CPU.

Pre-train a clean encoder on builtin:shapes, poison it with BadEncoder (references from builtin:glyphs,
the downstream family), clean it with the recommended `distill` recipe on the defender's 5% clean
subset of shapes, and evaluate all three on glyphs. Writes the three checkpoints and a report folder.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from encoder_clean.attacks import AttackInputs, get_attack
from encoder_clean.attacks.registry import image_hashes
from encoder_clean.cli.common import (DeviceOption, JsonOption, Output, QuietOption, SeedOption, check_output,
                                      handle_errors)
from encoder_clean.cli.pretrain import DEFAULT_ARCH
from encoder_clean.data.sampling import clean_subset
from encoder_clean.data.specs import load_data
from encoder_clean.distill.recipe import clean_with_distillation, recommended_for
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import produced_by, save_encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.metrics import evaluate_encoder
from encoder_clean.evaluate.probe import probe_config
from encoder_clean.evaluate.report import write_report
from encoder_clean.options import describe_options
from encoder_clean.pretrain import SimCLRConfig, pretrain_simclr
from encoder_clean.runtime import cpu_bf16, prepare_model, resolve_device, seed_everything
from encoder_clean.triggers import load_trigger

# Sized for the 3-minute budget on 2 CPU cores (bf16 where the CPU has it; README "Measured" has the run).
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


def _run(out_dir: Path, torch_device: torch.device, seed: int, output: Output, bf16: bool) -> None:
    precision = "bf16" if bf16 else "fp32"
    seed_everything(seed)
    progress = output.progress()
    pretraining, downstream = load_data(PRETRAIN_DATA), load_data(DOWNSTREAM_DATA)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    clean = prepare_model(create_encoder(DEFAULT_ARCH), torch_device)
    pretrain_simclr(clean, pretraining.train.images.to(torch_device), SimCLRConfig(epochs=PRETRAIN_EPOCHS),
                    seed=seed, device=torch_device, progress=progress, description="1/4 pretrain")
    timings["clean"] = time.perf_counter() - started
    save_encoder(clean, out_dir / "clean.safetensors",
                 settings={"command": "demo", "precision": precision, "data": PRETRAIN_DATA},
                 produced_by=produced_by("demo (pretrain)"))

    started = time.perf_counter()
    attack = get_attack("badencoder")
    config = dataclasses.replace(attack.preset("fast"), **POISON_SETTINGS)
    poisoned = copy.deepcopy(clean)
    target_images = downstream.train.images[downstream.train.labels == TARGET_CLASS].to(torch_device)
    outcome = attack.run(AttackInputs(poisoned, pretraining.train.images.to(torch_device), target_images, TRIGGER,
                                      TARGET_CLASS, torch_device, seed, progress), config)
    timings["poisoned"] = time.perf_counter() - started
    save_encoder(poisoned, out_dir / "poisoned.safetensors", produced_by=produced_by("demo (poison)"), settings={
        "command": "demo", "precision": precision, "attack": "badencoder", "trigger": TRIGGER,
        "target_class": TARGET_CLASS,
        "references_sha256": image_hashes(outcome.references), "attack_settings": describe_options(config)})

    started = time.perf_counter()
    defender = clean_subset(pretraining, CLEAN_FRACTION, seed).split.to(torch_device)
    recipe = recommended_for(poisoned)
    result = clean_with_distillation(poisoned, defender.images, defender.labels, pretraining.num_classes,
                                     finetune=recipe.finetune, student=recipe.student, losses=recipe.losses,
                                     options=(*recipe.options, *RECIPE_OPTIONS),
                                     finetune_options=(*recipe.finetune_options, *FINETUNE_OPTIONS), device=torch_device,
                                     seed=seed, progress=progress)
    timings["cleaned"] = time.perf_counter() - started
    save_encoder(result.student, out_dir / "cleaned.safetensors", produced_by=produced_by("demo (distill)"),
                 settings={"command": "demo", "precision": precision, "defense": "distill", **result.settings,
                           "trigger": TRIGGER,
                           "target_class": TARGET_CLASS})

    trigger = load_trigger(TRIGGER, clean.image_size)
    rows = []
    for name, model in (("clean", clean), ("poisoned", poisoned), ("cleaned", result.student)):
        metrics = evaluate_encoder(model, downstream, trigger, TARGET_CLASS, probe_config("linear"),
                                   device=torch_device, seed=seed, progress=progress)
        rows.append({"name": name, "checkpoint": str(out_dir / f"{name}.safetensors"), **metrics.as_dict(),
                     "seconds": round(timings[name], 1)})
    payload = {"pretrain_data": PRETRAIN_DATA, "downstream_data": DOWNSTREAM_DATA, "arch": DEFAULT_ARCH,
               "attack": "badencoder", "trigger": TRIGGER, "target_class": TARGET_CLASS,
               "recipe": result.settings, "precision": precision, "seconds": output.seconds,
               "encoders": rows}
    report = out_dir / "report"
    write_report(report, payload, rows, "encoder-clean demo: BadEncoder before and after distillation", [
        f"Pre-trained on `{PRETRAIN_DATA}`, evaluated with a linear probe on `{DOWNSTREAM_DATA}`; "
        f"trigger `{TRIGGER}`, target class {TARGET_CLASS}; cleaned with `distill` defaults "
        f"({', '.join(result.settings['losses'])}, student {result.settings['student']}) on "
        f"{len(defender)} clean images."])
    output.console.print(_table(rows))
    output.console.print(f"checkpoints and report in [bold]{out_dir}[/] ({output.seconds:.0f} s)", soft_wrap=True)
    output.emit_json({**payload, "report": str(report)})


def _table(rows: list[dict]) -> Table:
    table = Table(title="demo: BadEncoder, before and after cleaning (downstream: glyphs)")
    for column in ("encoder", "ACC %", "ASR %", "ASR non-target %", "seconds"):
        table.add_column(column, justify="left" if column == "encoder" else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['acc']:.2f}", f"{row['asr']:.2f}", f"{row['asr_nontarget']:.2f}",
                      f"{row['seconds']:.1f}")
    return table
