"""`encoder-clean purify`: a teacher-side defense (fine-tuning, fine-pruning, ANP, MOTH) on clean data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from encoder_clean import api
from encoder_clean.cli.common import (ArchOption, PrefixOption, CheckpointEveryOption, CleanFractionOption, CompileOption,
                                      DEFAULT_CHECKPOINT_EVERY, DataOption, DeviceOption, JsonOption, Output,
                                      QuietOption, ResumeOption, SeedOption, about, check_output, check_room,
                                      handle_errors, resumable, run_identity, training_command)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.data.sampling import fraction_count
from encoder_clean.defenses import list_defenses
from encoder_clean.defenses.registry import get_defense
from encoder_clean.options import apply_options, to_assignments

MethodOption = Annotated[str, typer.Option("--method", help=f"Defense: {', '.join(list_defenses())} (see `encoder-clean list defenses`).")]
EpochsOption = Annotated[Optional[int], typer.Option("--epochs", help="Passes over the clean subset (default: the method's).")]
LrOption = Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the method's).")]


@handle_errors
@training_command
def purify(
    encoder: Annotated[str, typer.Argument(metavar="ENCODER", help="Encoder to clean: checkpoint file or hf://OWNER/REPO[/PATH][@REV].")],
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint (.safetensors).")],
    method: MethodOption = "ft",
    data: DataOption = "builtin",
    clean_fraction: CleanFractionOption = 0.05,
    epochs: EpochsOption = None,
    lr: LrOption = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="Any other setting of the method, repeatable (see `encoder-clean list defenses`).")] = None,
    arch: ArchOption = None,
    prefix: PrefixOption = None,
    resume: ResumeOption = False,
    checkpoint_every: CheckpointEveryOption = DEFAULT_CHECKPOINT_EVERY,
    compile_model: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Clean ENCODER with a teacher-side defense, using only the defender's clean subset of --data.

    The clean subset is a class-balanced sample of --clean-fraction of the training split, drawn by --seed;
    the defense never sees test data, triggers or poisoned data. MOTH also uses the subset's labels.
    """
    output = Output(json_path, quiet)
    check_output(out)
    fraction_count(1, clean_fraction)  # the flag's range
    config = api.PurifyConfig(method=method, clean_fraction=clean_fraction, epochs=epochs, lr=lr,
                              options=tuple(option or ()))
    with about("--method", method):  # the name and the settings, before any data is read
        apply_options(get_defense(method).defaults, to_assignments({"epochs": epochs, "lr": lr}) + list(option or []),
                      f"defense {method}")
    loaded = open_encoder(encoder, arch, prefix)
    identity = run_identity("purify", {"data": data, **dataclasses.asdict(config), "seed": seed}, loaded.sha256)
    with resumable(out, resume, checkpoint_every, identity):
        check_room(out, loaded.encoder)
        result = api.purify(loaded, data, config, device=device, seed=seed, progress=output.progress())
        sha = result.save(out)
    output.console.print(f"wrote [bold]{out}[/] ({method} on {result.report['clean_images']} clean images, "
                         f"{output.seconds:.1f} s, sha256 {sha[:12]})", soft_wrap=True)
    output.emit_json({"out": str(out), "sha256": sha, "seconds": output.seconds, **result.report})
