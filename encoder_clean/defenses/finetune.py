"""FT: fine-tune the encoder on the defender's clean subset with a self-supervised objective (SimCLR by
default; `method=mocov2|byol` for the others, e.g. the one that produced the encoder).

The simplest teacher defense and the baseline every other defense must beat (NAD's authors note that
fine-tuning alone already removes much of a backdoor; NAD, Li et al., ICLR 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from encoder_clean.data.augment import augmentation
from encoder_clean.defenses.registry import Defense, DefenseInputs, DefenseOutcome, register_defense
from encoder_clean.errors import UserError
from encoder_clean.pretrain import DEFAULT_METHOD, PretrainLoopConfig, pretrain_encoder


@dataclass(frozen=True)
class FinetuneConfig:
    # 500 clean images (5% of the built-in training split) at batch 128 make 3 steps an epoch, so
    # 50 epochs are 150 steps: about 40 s for resnet18-cifar-w16 on 2 CPU cores.
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3  # the seed paper's Adam learning rate for its clean-data training
    weight_decay: float = 1e-6
    augment: str = "strong"
    method: str = DEFAULT_METHOD  # the pre-training method (`encoder-clean list methods`)
    temperature: float = 0.0  # 0: the method's own (SimCLR 0.5, MoCo v2 0.2; BYOL has none)
    patch_prob: float = 0.0  # share of second views with a random patch, pulled toward their clean twins


def pretrain_settings(config: FinetuneConfig) -> PretrainLoopConfig:
    if config.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if config.lr <= 0:
        raise UserError("the learning rate must be positive")
    if config.temperature < 0:
        raise UserError(f"temperature must be positive (or 0 for the method's own), got {config.temperature}")
    if not 0 <= config.patch_prob <= 1:
        raise UserError(f"patch_prob must be in [0, 1], got {config.patch_prob}")
    options = (f"temperature={config.temperature}",) if config.temperature else ()
    return PretrainLoopConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                              weight_decay=config.weight_decay, warmup_steps=10,
                              augment=augmentation(config.augment), method=config.method, options=options,
                              patch_prob=config.patch_prob)


def finetune(inputs: DefenseInputs, config: FinetuneConfig, *, description: str = "fine-tuning",
             after_step: Callable[[], None] | None = None) -> dict[str, object]:
    """The pre-training method on the clean subset, in place; shared by FT and FP (which keeps its pruned
    weights at zero)."""
    return pretrain_encoder(inputs.encoder, inputs.clean_images, pretrain_settings(config), seed=inputs.seed,
                            device=inputs.device, progress=inputs.progress, description=description,
                            after_step=after_step)


def run_finetune(inputs: DefenseInputs, config: FinetuneConfig) -> DefenseOutcome:
    return DefenseOutcome(finetune(inputs, config))


register_defense(Defense("ft", "fine-tune with SimCLR (or method=mocov2|byol) on the clean subset", FinetuneConfig(),
                         run_finetune))
