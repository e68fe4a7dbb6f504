"""Teacher defenses for `purify` (and `distill --finetune`): a registry, one module per method."""

from encoder_clean.defenses import anp, fineprune, finetune, moth  # noqa: F401  (they register themselves)
from encoder_clean.defenses.registry import (Defense, DefenseInputs, DefenseOutcome, get_defense, list_defenses,
                                             register_defense)

__all__ = ["Defense", "DefenseInputs", "DefenseOutcome", "get_defense", "list_defenses", "register_defense"]
