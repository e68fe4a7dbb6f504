"""Self-supervised pre-training, shared by `pretrain`, the data-poisoning attacks (BASSL, CTRL), the
fine-tuning defense and the warm-up student: one loop (`core`), one module per method (`simclr`,
`mocov2`, `byol`), registered by name (`registry`)."""

from encoder_clean.pretrain import byol, mocov2, simclr  # noqa: F401  (each registers its method)
from encoder_clean.pretrain.core import DEFAULT_METHOD, PretrainLoopConfig, pretrain_encoder, two_views
from encoder_clean.pretrain.registry import Method, Objective, Schedule, get_method, list_methods, register_method
from encoder_clean.pretrain.simclr import nt_xent

# The names from before there was more than one method, for the callers that still use them.
SimCLRConfig = PretrainLoopConfig
pretrain_simclr = pretrain_encoder

__all__ = ["DEFAULT_METHOD", "Method", "Objective", "PretrainLoopConfig", "Schedule", "get_method", "list_methods",
           "nt_xent", "pretrain_encoder", "register_method", "two_views", "SimCLRConfig", "pretrain_simclr"]
