"""Backdoor attacks for red-teaming: a registry, one module per attack."""

from encoder_clean.attacks.registry import get_attack, list_attacks, register_attack

# Importing the modules registers their attacks.
from encoder_clean.attacks import badencoder as _badencoder  # noqa: F401,E402

__all__ = ["get_attack", "list_attacks", "register_attack"]
