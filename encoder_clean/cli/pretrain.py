"""`encoder-clean pretrain`: train a clean encoder with SimCLR, MoCo v2 or BYOL (the baseline every attack
starts from)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
from encoder_clean.options import describe_options
from encoder_clean.pretrain import DEFAULT_METHOD, PretrainConfig, get_method, list_methods, pretrain_encoder
from encoder_clean.runtime import place_images, prepare_model, resolve_device, seed_everything

DEFAULT_ARCH = "resnet18-cifar-w16"
DEFAULTS = PretrainConfig()


@handle_errors
@training_command
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint (.safetensors).")],
    data: DataOption = "builtin",
    arch: Annotated[str, typer.Option("--arch", help="Architecture to train (see `encoder-clean archs`).")] = DEFAULT_ARCH,
    method: Annotated[str, typer.Option("--method", help=f"Pre-training method: {', '.join(list_methods())}.")] = DEFAULT_METHOD,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training split; 0 writes the random initialisation.")] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step (two views each).")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (warm-up, then cosine decay).")] = DEFAULTS.lr,
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
    if epochs < 0:
        raise UserError("--epochs must be 0 or more")
    if lr <= 0:
        raise UserError("--lr must be positive")
    assignments = list(option or [])
    method_settings = get_method(method).settings(assignments)  # refuses a bad method or setting up front
    torch_device = resolve_device(device)
    recipe = {"data": data, "arch": arch, "method": method, "option": " ".join(assignments) or None, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "augment": augment, "seed": seed}
    with resumable(out, resume, checkpoint_every, run_identity("pretrain", recipe)):
        seed_everything(seed)
        dataset = load_data(data, output.progress())
        encoder = prepare_model(create_encoder(arch), torch_device)
        check_room(out, encoder)
        config = PretrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, augment=augmentation(augment),
                                method=method, options=tuple(assignments))
        stats: dict[str, object] = {"method": method, "steps": 0, "final_loss": None}
        if epochs > 0:
            images = place_images(dataset.train.images, torch_device)
            stats = pretrain_encoder(encoder, images, config, seed=seed, device=torch_device,
                                     progress=output.progress(), description=f"pretrain {arch} ({method})")
        settings = {"command": "pretrain", "method": method, "method_settings": describe_options(method_settings),
                    "data": data, "epochs": epochs, "batch_size": config.batch_size, "lr": lr, "augment": augment,
                    "seed": seed}
        sha = save_encoder(encoder, out, settings=settings, produced_by=produced_by(command_line("pretrain", recipe)))
    result = {"out": str(out), "sha256": sha, "seconds": output.seconds, "arch": arch, "data": data,
              **stats}
    output.console.print(f"wrote [bold]{out}[/] ({arch}, {method}, {stats['steps']} steps, "
                         f"{output.seconds:.1f} s, sha256 {sha[:12]})", soft_wrap=True)
    output.emit_json(result)
