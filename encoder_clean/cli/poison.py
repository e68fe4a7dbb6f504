"""`encoder-clean poison`: implant a backdoor (BadEncoder, DRUPE, BASSL, CTRL) for red-teaming."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from encoder_clean import api
from encoder_clean.data.specs import check_spec
from encoder_clean.attacks import get_attack, list_attacks
from encoder_clean.cli.common import (ArchOption, PrefixOption, CheckpointEveryOption, CompileOption, DEFAULT_CHECKPOINT_EVERY,
                                      DataOption, DeviceOption, JsonOption, Output, QuietOption, ResumeOption,
                                      SeedOption, about, check_output, check_room, handle_errors, resumable,
                                      run_identity, training_command)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.errors import UserError
from encoder_clean.fileio import sha256_file
from encoder_clean.triggers import load_trigger


@handle_errors
@training_command
def poison(
    encoder: Annotated[str, typer.Argument(metavar="ENCODER", help="Clean encoder: checkpoint file or hf://OWNER/REPO[/PATH][@REV].")],
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint (.safetensors).")],
    attack: Annotated[str, typer.Option("--attack", help=f"Attack: {', '.join(list_attacks())}.")] = "badencoder",
    trigger: Annotated[Optional[str], typer.Option("--trigger", help="Trigger (see `encoder-clean list triggers`; default: white-square, or ctrl for --attack ctrl).")] = None,
    target_class: Annotated[int, typer.Option("--target-class", help="Target class K of the reference data.")] = 0,
    data: DataOption = "builtin",
    reference_data: Annotated[Optional[str], typer.Option("--reference-data", metavar="SPEC", help="Downstream data whose class-K training images are the references (default: --data).")] = None,
    num_references: Annotated[Optional[int], typer.Option("--num-references", help="Reference images for BadEncoder/DRUPE (default: the preset's).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Passes over --data (default: the preset's).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: the preset's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Shadow images per step (default: the preset's).")] = None,
    preset: Annotated[str, typer.Option("--preset", help="fast (default: measured to work in minutes on a CPU) or published (the paper's recipe).")] = "fast",
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="Any other attack setting, repeatable (see `encoder-clean list attacks`).")] = None,
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
    """Implant a backdoor into ENCODER so that triggered images embed like class K of the reference data.

    BadEncoder and DRUPE fine-tune the encoder on --data (shadow images) with target-class references;
    BASSL and CTRL add poisoned target-class images to --data and run ordinary SimCLR on it.
    """
    output = Output(json_path, quiet)
    check_output(out)
    if target_class < 0:
        raise UserError(f"--target-class {target_class}: must be 0 or more")
    with about("--attack", attack):
        spec = get_attack(attack)
    if reference_data is not None:
        with about("--reference-data", reference_data):
            check_spec(reference_data)
    config = api.PoisonConfig(attack=attack, trigger=trigger, target_class=target_class, reference_data=reference_data,
                              preset=preset, epochs=epochs, lr=lr, batch_size=batch_size,
                              num_references=num_references, options=tuple(option or ()))
    loaded = open_encoder(encoder, arch, prefix)
    trigger_spec = trigger or spec.default_trigger
    with about("--trigger", trigger_spec):
        load_trigger(trigger_spec, loaded.encoder.image_size)  # a bad trigger fails before any data is read
    trigger_file = Path(trigger_spec)
    identity = run_identity("poison", {"data": data, **dataclasses.asdict(config), "seed": seed}, loaded.sha256,
                            sha256_file(trigger_file) if trigger_file.is_file() else None)
    with resumable(out, resume, checkpoint_every, identity):
        check_room(out, loaded.encoder)
        result = api.poison(loaded, data, config, device=device, seed=seed, progress=output.progress())
        sha = result.save(out)
    output.console.print(f"wrote [bold]{out}[/] ({attack}, trigger {trigger_spec}, target class {target_class}, "
                         f"{result.report.get('steps')} steps, {output.seconds:.1f} s, sha256 {sha[:12]})",
                         soft_wrap=True)
    output.emit_json({"out": str(out), "sha256": sha, "seconds": output.seconds, **result.report})
