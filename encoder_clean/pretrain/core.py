"""The one pre-training loop of every method: batches of two augmented views through a method's
objective, on the training-loop core (on-device batches and augmentation, data-parallel under
torchrun, resumable, bf16 where `autocast` allows it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from encoder_clean.data.augment import AugmentConfig, augmentation, random_patches, simclr_augment
from encoder_clean.encoders.base import Encoder
from encoder_clean.pretrain.registry import Objective, Schedule, get_method
from encoder_clean.runtime import NULL_PROGRESS, Progress, device_generator, fused, take
from encoder_clean.training import EpochBatcher, run_steps
from encoder_clean.training.loop import warmup_cosine

DEFAULT_METHOD = "simclr"


@dataclass(frozen=True)
class PretrainLoopConfig:
    """How the training loop runs (the public `encoder_clean.PretrainConfig` is what a user asks for; it
    also chooses the architecture and names the augmentation preset that this holds resolved)."""

    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 20
    augment: AugmentConfig = field(default_factory=lambda: augmentation("strong"))
    method: str = DEFAULT_METHOD
    options: tuple[str, ...] = ()  # the method's settings as KEY=VALUE, over its published defaults
    # Share of second views given a random patch (solid, noise, checkerboard or another image's window;
    # `random_patches`): the objective then pulls a patched view toward its clean twin, which a cleaning
    # fine-tune uses to unlearn "small patch -> fixed embedding" without knowing any trigger. 0 in pre-training.
    patch_prob: float = 0.0


def two_views(images: torch.Tensor, size: int, g: torch.Generator, augment: AugmentConfig,
              patch_prob: float = 0.0) -> torch.Tensor:
    """Two augmented views of each uint8 image: the first views of the batch, then the second (a share
    `patch_prob` of the second views with a random patch, `PretrainLoopConfig.patch_prob`)."""
    first, second = simclr_augment(images, size, g, augment), simclr_augment(images, size, g, augment)
    if patch_prob > 0:
        second = random_patches(second, g, patch_prob)
    return torch.cat([first, second]).contiguous(memory_format=torch.channels_last)


def parameter_groups(encoder: Encoder, objective: Objective, lr: float) -> list[dict]:
    """The optimiser's groups: the encoder with its head and the objective's trained parameters at `lr`,
    except the parts the objective scales (`Objective.lr_scales`), each in a group of its own."""
    scales = objective.lr_scales()
    apart = {id(p) for module in scales for p in module.parameters()}
    trained = [*encoder.parameters(), *(p for p in objective.parameters() if p.requires_grad)]
    return [{"params": [p for p in trained if id(p) not in apart], "lr": lr},
            *({"params": [p for p in module.parameters() if p.requires_grad], "lr": lr * scale}
              for module, scale in scales.items())]


def pretrain_encoder(encoder: Encoder, images: torch.Tensor, config: PretrainLoopConfig, *, seed: int,
                     device: torch.device, progress: Progress = NULL_PROGRESS, description: str | None = None,
                     after_step: Callable[[], None] | None = None) -> dict[str, object]:
    """Train `encoder` (with its projection head) in place with `config.method` on uint8 `images` (on
    `device`, or in host memory for data too large for it: see `place_images`). `after_step` runs after
    each optimiser step, before the method's own update."""
    method = get_method(config.method)
    settings = method.settings(config.options)
    encoder.add_head().train()
    g = device_generator(device, seed)
    batcher = EpochBatcher(len(images), config.batch_size, g, images.device)
    total = max(1, config.epochs * batcher.steps_per_epoch)
    objective = method.build(encoder, settings, Schedule(total, batcher.batch_size, len(images), g)).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(encoder, objective, config.lr), lr=config.lr,
                                  weight_decay=config.weight_decay, **fused(device))
    scheduler = warmup_cosine(optimizer, total, min(config.warmup_steps, total // 10))
    batches = iter(batcher)

    def step(_: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views = two_views(take(images, next(batches), device), encoder.image_size, g, config.augment,
                          config.patch_prob)
        loss = objective.loss(encoder, views, device)
        return loss, objective.metrics()

    def update() -> None:
        if after_step is not None:
            after_step()
        objective.update(encoder)

    history = run_steps(step, optimizer, total, scheduler=scheduler, progress=progress,
                        state={"encoder": encoder, "objective": objective, "generator": g, "batches": batches},
                        description=description or method.name, after_step=update)
    encoder.eval()
    last = history[-1] if history else {}
    return {"method": method.name, "steps": total, "final_loss": last.get("loss"),
            **{f"final_{key}": value for key, value in last.items() if key not in ("step", "loss")}}
