"""The training-loop core shared by pretrain, poison, purify and distill."""

from encoder_clean.training.batches import EpochBatcher
from encoder_clean.training.loop import run_steps

__all__ = ["EpochBatcher", "run_steps"]
