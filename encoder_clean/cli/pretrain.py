"""`encoder-clean pretrain`: train a clean encoder with SimCLR, MoCo v2 or BYOL (the baseline every attack
starts from)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from encoder_clean import api
from encoder_clean.cli.common import (CheckpointEveryOption, CompileOption, DEFAULT_CHECKPOINT_EVERY, DataOption,
                                      DeviceOption, JsonOption, Output, QuietOption, ResumeOption, SeedOption,
                                      about, check_output, check_room, handle_errors, resumable, run_identity,
                                      training_command)
from encoder_clean.data.augment import augmentation
from encoder_clean.encoders import create_encoder
from encoder_clean.pretrain import DEFAULT_METHOD, PretrainLoopConfig, get_method, list_methods

DEFAULT_ARCH = "resnet18-cifar-w16"
DEFAULTS = PretrainLoopConfig()


@handle_errors
@training_command
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint (.safetensors).")],
    data: DataOption = "builtin",
    arch: Annotated[str, typer.Option("--arch", help="Architecture to train (see `encoder-clean list archs`).")] = DEFAULT_ARCH,
    method: Annotated[str, typer.Option("--method", help=f"Pre-training method: {', '.join(list_methods())}.")] = DEFAULT_METHOD,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training split; 0 writes the random initialisation.")] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step (two views each).")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (warm-up, then cosine decay).")] = DEFAULTS.lr,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Steps of linear learning-rate warm-up, at most a tenth of the run (docs/commands.md has BYOL's short-run figures with the whole tenth).")] = DEFAULTS.warmup_steps,
    augment: Annotated[str, typer.Option("--augment", help="Augmentation preset: strong (default; best on built-in data) or simclr (the SimCLR CIFAR recipe).")] = "strong",
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", metavar="KEY=VALUE", help="A setting of the --method, repeatable (see `encoder-clean list methods`).")] = None,
    resume: ResumeOption = False,
    checkpoint_every: CheckpointEveryOption = DEFAULT_CHECKPOINT_EVERY,
    compile_model: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Pre-train a clean encoder on any data spec with SimCLR (NT-Xent, temperature 0.5), MoCo v2
    (momentum key encoder, queue of 4,096 negatives, temperature 0.2) or BYOL (predictor, EMA target)."""
    output = Output(json_path, quiet)
    check_output(out)
    config = api.PretrainConfig(arch=arch, method=method, epochs=epochs, batch_size=batch_size, lr=lr,
                                warmup_steps=warmup_steps, augment=augment, options=tuple(option or ()))
    config.check()
    with about("--method", method):
        get_method(method).settings(list(option or ()))
    with about("--augment", augment):
        augmentation(augment)
    identity = run_identity("pretrain", {"data": data, **dataclasses.asdict(config), "seed": seed})
    with resumable(out, resume, checkpoint_every, identity):
        check_room(out, create_encoder(arch))
        result = api.pretrain(data, config, device=device, seed=seed, progress=output.progress())
        sha = result.save(out)
    output.console.print(f"wrote [bold]{out}[/] ({arch}, {method}, {result.report['steps']} steps, "
                         f"{output.seconds:.1f} s, sha256 {sha[:12]})", soft_wrap=True)
    output.emit_json({"out": str(out), "sha256": sha, "seconds": output.seconds, **result.report})
