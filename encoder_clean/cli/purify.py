"""`encoder-clean purify`: a teacher-side defense (fine-tuning, fine-pruning, ANP, MOTH) on clean data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from encoder_clean.cli.common import (ArchOption, PrefixOption, CheckpointEveryOption, CleanFractionOption, CompileOption,
                                      DEFAULT_CHECKPOINT_EVERY, DataOption, DeviceOption, JsonOption, Output,
                                      QuietOption, ResumeOption, SeedOption, about, check_output, check_room, command_line,
                                      defender_data, flag_assignments, handle_errors, inherited_attack, resumable,
                                      run_identity, training_command)
from encoder_clean.cli.reading import open_encoder
from encoder_clean.defenses import DefenseInputs, list_defenses
from encoder_clean.defenses.registry import get_defense, run_defense
from encoder_clean.encoders.io import produced_by, save_encoder
from encoder_clean.options import apply_options, describe_options
from encoder_clean.runtime import prepare_model, resolve_device, seed_everything

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

    The clean subset is the first --clean-fraction of the training split; the defense never sees test
    data, triggers or poisoned data. MOTH also uses the subset's labels.
    """
    output = Output(json_path, quiet)
    check_output(out)
    assignments = flag_assignments(epochs=epochs, lr=lr) + list(option or [])
    with about("--method", method):  # the name and the settings, before any data is read
        apply_options(get_defense(method).defaults, assignments, f"defense {method}")
    torch_device = resolve_device(device)
    seed_everything(seed)
    loaded = open_encoder(encoder, arch, prefix)
    recipe = {"method": method, "data": data, "clean_fraction": clean_fraction, "option": " ".join(assignments) or None,
              "seed": seed}
    with resumable(out, resume, checkpoint_every, run_identity("purify", recipe, loaded.sha256)):
        model = prepare_model(loaded.encoder, torch_device)
        check_room(out, model)
        defender = defender_data(data, clean_fraction, torch_device, seed, output.progress())
        clean, num_classes = defender.split, defender.num_classes
        config, outcome = run_defense(method, DefenseInputs(model, clean.images, clean.labels, num_classes,
                                                            torch_device, seed, output.progress()), assignments)
        settings = {"command": "purify", "defense": method, "defense_settings": describe_options(config),
                    "data": data, "clean_fraction": clean_fraction, "clean_images": len(clean), "clean_sample": defender.sample,
                    "seed": seed,
                    **outcome.extra_metadata, **inherited_attack(loaded)}
        sha = save_encoder(model, out, parent_sha256=loaded.sha256, settings=settings,
                           produced_by=produced_by(command_line("purify", recipe)))
    output.console.print(f"wrote [bold]{out}[/] ({method} on {len(clean)} clean images, "
                         f"{output.seconds:.1f} s, sha256 {sha[:12]})", soft_wrap=True)
    output.emit_json({"out": str(out), "sha256": sha, "seconds": output.seconds, "method": method,
                      "settings": describe_options(config), "clean_images": len(clean), "clean_sample": defender.sample, **outcome.stats})
