"""`encoder-clean distill`: distil a clean student from a (purified) backdoored teacher."""

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
from encoder_clean.cli.purify import EpochsOption, LrOption
from encoder_clean.data.sampling import fraction_count
from encoder_clean.defenses import list_defenses
from encoder_clean.defenses.registry import get_defense
from encoder_clean.distill.losses import list_losses
from encoder_clean.distill.losses.registry import parse_loss_spec
from encoder_clean.distill.recipe import FAMILY_RECIPES, NO_FINETUNE
from encoder_clean.distill.students import get_student, list_students
from encoder_clean.distill.trainer import DistillConfig
from encoder_clean.encoders.base import Encoder
from encoder_clean.encoders.export import FORMATS, check_folder_output
from encoder_clean.errors import UserError
from encoder_clean.options import apply_options


def _defaults(part: str) -> str:
    """One recipe part of every family, for --help: 'convnet: ft, transformer: ft'."""
    return ", ".join(f"{family}: {' '.join(getattr(recipe, part)) if part == 'losses' else getattr(recipe, part)}"
                     for family, recipe in FAMILY_RECIPES.items())


def _check_recipe(teacher: Encoder, plan: api.DistillPlan, student_arch: str | None) -> None:
    """Every name and setting of the recipe, checked before any data is read (the library checks them
    again where it uses them)."""
    with about("--student", plan.student):
        get_student(plan.student).check_arch(student_arch or teacher.arch, teacher.arch)
    for text in plan.losses:
        with about("--loss", text):
            parse_loss_spec(text, teacher.tap_names, teacher.attention_taps)
    apply_options(DistillConfig(), plan.options, "distill").check()
    if plan.finetune != NO_FINETUNE:
        with about("--finetune", plan.finetune):
            apply_options(get_defense(plan.finetune).defaults, plan.finetune_options, f"defense {plan.finetune}")


@handle_errors
@training_command
def distill(
    teacher: Annotated[str, typer.Argument(metavar="TEACHER", help="Backdoored encoder: checkpoint file or hf://OWNER/REPO[/PATH][@REV].")],
    out: Annotated[Path, typer.Option("--out", help="Output: the student's checkpoint (.safetensors), or a new folder with --format timm|transformers.")],
    out_format: Annotated[str, typer.Option("--format", help="safetensors (ours, default), or timm / transformers: a folder in that library's layout, for a student of that library.")] = "safetensors",
    student: Annotated[Optional[str], typer.Option("--student", help=f"Student: {', '.join(list_students())}. Default: the recommended recipe's ({_defaults('student')}).", show_default=False)] = None,
    loss: Annotated[Optional[list[str]], typer.Option("--loss", metavar="NAME[=WEIGHT][@TAP,...]", help=f"Distillation loss, repeatable: {', '.join(list_losses())} (see `encoder-clean list losses`). Default: the recommended recipe's ({_defaults('losses')}).", show_default=False)] = None,
    finetune: Annotated[Optional[str], typer.Option("--finetune", help=f"Run this purify method on the teacher first: {', '.join(list_defenses())} or {NO_FINETUNE}. Default: the recommended recipe's ({_defaults('finetune')}).", show_default=False)] = None,
    data: DataOption = "builtin",
    clean_fraction: CleanFractionOption = 0.05,
    epochs: EpochsOption = None,
    lr: LrOption = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Clean images per step (default 128).")] = None,
    student_arch: Annotated[Optional[str], typer.Option("--student-arch", help="Architecture of a void or warm-up student (default: the teacher's).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="Any other distillation setting, repeatable (see `encoder-clean list losses`).")] = None,
    finetune_option: Annotated[Optional[list[str]], typer.Option("--finetune-option", metavar="KEY=VALUE", help="A setting of the --finetune method, repeatable.")] = None,
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
    """Distil a clean student from TEACHER on the defender's clean subset of --data.

    With no options this runs the recommended recipe for the teacher's family: convolutional encoders
    and vision transformers each have their own (docs/recipes.md says what each is and how it was
    chosen; the convnet recipe pastes random patches on half of the fine-tune's and the student's views
    so that neither keeps a response to a small patch). Student, teacher defense and losses combine freely; each
    --loss applies to the layer taps it names (default: all layer taps for map losses, the embedding
    for feature losses).
    """
    output = Output(json_path, quiet)
    if out_format not in FORMATS:
        raise UserError(f"--format {out_format}: choose one of {', '.join(FORMATS)}")
    if out_format == "safetensors":
        check_output(out)
    else:
        check_folder_output(out)
    fraction_count(1, clean_fraction)  # the flag's range
    config = api.DistillConfig(student=student, losses=tuple(loss) if loss else None, finetune=finetune,
                               clean_fraction=clean_fraction, epochs=epochs, lr=lr, batch_size=batch_size,
                               student_arch=student_arch, options=tuple(option or ()),
                               finetune_options=tuple(finetune_option or ()))
    loaded = open_encoder(teacher, arch, prefix)
    plan = api.distill_plan(loaded.encoder, config)  # the recommended recipe fills in what is not given
    _check_recipe(loaded.encoder, plan, student_arch)
    if out_format != "safetensors" and student_arch is None and not loaded.encoder.arch.startswith(f"{out_format}/"):
        # the student has the teacher's architecture: refuse before training, not at the export
        raise UserError(f"--format {out_format} needs a {out_format} encoder, not {loaded.encoder.arch}")
    identity = run_identity("distill", {"data": data, **dataclasses.asdict(plan), "clean_fraction": clean_fraction,
                                        "student_arch": student_arch, "seed": seed}, loaded.sha256)
    with resumable(out, resume, checkpoint_every, identity):
        check_room(out, loaded.encoder)
        result = api.distill(loaded, data, config, device=device, seed=seed, progress=output.progress())
        sha = result.save(out, format=out_format)
    report = result.report
    output.console.print(f"wrote [bold]{out}[/] (student {report['student']}, losses {', '.join(report['losses'])}, "
                         f"teacher defense {report['finetune']}, {report['clean_images']} clean images, "
                         f"{output.seconds:.1f} s, sha256 {sha[:12]})", soft_wrap=True)
    output.emit_json({"out": str(out), "sha256": sha, "seconds": output.seconds, **report})
