"""Backdoor attacks for red-teaming: a registry, one module per attack."""

from encoder_clean.attacks.registry import (Attack, AttackInputs, AttackOutcome, get_attack, list_attacks,
                                            register_attack)

# Importing the modules registers their attacks.
from encoder_clean.attacks import bassl as _bassl  # noqa: F401,E402
from encoder_clean.attacks import badencoder as _badencoder  # noqa: F401,E402
from encoder_clean.attacks import ctrl as _ctrl  # noqa: F401,E402
from encoder_clean.attacks import drupe as _drupe  # noqa: F401,E402

__all__ = ["Attack", "AttackInputs", "AttackOutcome", "get_attack", "list_attacks", "register_attack"]
