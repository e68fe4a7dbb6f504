"""Distillation losses: the registry and every loss kind (importing a module registers its kind)."""

from encoder_clean.distill.losses.registry import (FEATURES, LossKind, LossSpec, get_loss, list_losses,
                                                   parse_loss_spec, register_loss)
from encoder_clean.distill.losses import afd, attention, attention_probs, cc, fitnet, kd, pkt, rkd, similarity, sp

# Importing these registers their losses; naming them here keeps the imports visibly used.
LOSS_MODULES = (afd, attention, attention_probs, cc, fitnet, kd, pkt, rkd, similarity, sp)

__all__ = ["FEATURES", "LossKind", "LossSpec", "get_loss", "list_losses", "parse_loss_spec", "register_loss"]
