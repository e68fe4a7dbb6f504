"""Self-supervised pre-training methods."""

from encoder_clean.pretrain.simclr import SimCLRConfig, nt_xent, pretrain_simclr, simclr_loss

__all__ = ["SimCLRConfig", "nt_xent", "pretrain_simclr", "simclr_loss"]
