"""`encoder-clean pretrain`: train a clean SimCLR encoder (the baseline every attack starts from)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from encoder_clean.cli.common import (CheckpointEveryOption, CompileOption, DEFAULT_CHECKPOINT_EVERY, DataOption,
                                      DeviceOption, JsonOption, Output, QuietOption, ResumeOption, SeedOption,
                                      check_output, check_room, command_line, handle_errors, resumable, run_identity,
                                      training_command)
from encoder_clean.data.augment import augmentation
from encoder_clean.data.specs import load_data
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import produced_by, save_encoder
from encoder_clean.errors import UserError
from encoder_clean.pretrain import SimCLRConfig, pretrain_simclr
from encoder_clean.runtime import place_images, prepare_model, resolve_device, seed_everything

DEFAULT_ARCH = "resnet18-cifar-w16"
DEFAULTS = SimCLRConfig()


@handle_errors
@training_command
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint (.safetensors).")],
    data: DataOption = "builtin",
    arch: Annotated[str, typer.Option("--arch", help="Architecture to train (see `encoder-clean archs`).")] = DEFAULT_ARCH,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training split; 0 writes the random initialisation.")] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step (two views each).")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (warm-up, then cosine decay).")] = DEFAULTS.lr,
    augment: Annotated[str, typer.Option("--augment", help="Augmentation preset: strong (default; best on built-in data) or simclr (the SimCLR CIFAR recipe).")] = "strong",
    resume: ResumeOption = False,
    checkpoint_every: CheckpointEveryOption = DEFAULT_CHECKPOINT_EVERY,
    compile_model: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    quiet: QuietOption = False,
) -> None:
    """Pre-train a clean encoder with SimCLR (NT-Xent, temperature 0.5) on any data spec."""
    output = Output(json_path, quiet)
    check_output(out)
    if epochs < 0:
        raise UserError("--epochs must be 0 or more")
    if lr <= 0:
        raise UserError("--lr must be positive")
    torch_device = resolve_device(device)
    recipe = {"data": data, "arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "augment": augment,
              "seed": seed}
    with resumable(out, resume, checkpoint_every, run_identity("pretrain", recipe)):
        seed_everything(seed)
        dataset = load_data(data, output.progress())
        encoder = prepare_model(create_encoder(arch), torch_device)
        check_room(out, encoder)
        config = SimCLRConfig(epochs=epochs, batch_size=batch_size, lr=lr, augment=augmentation(augment))
        stats: dict[str, object] = {"steps": 0, "final_loss": None}
        if epochs > 0:
            images = place_images(dataset.train.images, torch_device)
            stats = pretrain_simclr(encoder, images, config, seed=seed, device=torch_device,
                                    progress=output.progress(), description=f"pretrain {arch}")
        settings = {"command": "pretrain", "data": data, "epochs": epochs, "batch_size": config.batch_size,
                    "lr": lr, "augment": augment, "temperature": config.temperature, "seed": seed}
        sha = save_encoder(encoder, out, settings=settings, produced_by=produced_by(command_line("pretrain", recipe)))
    result = {"out": str(out), "sha256": sha, "seconds": output.seconds, "arch": arch, "data": data,
              **stats}
    output.console.print(f"wrote [bold]{out}[/] ({arch}, {stats['steps']} steps, "
                         f"{output.seconds:.1f} s, sha256 {sha[:12]})", soft_wrap=True)
    output.emit_json(result)
