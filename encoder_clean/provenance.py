"""What a written checkpoint says about how it was made, assembled in one place for every command.

Every output carries `produced_by` (the tool, its version and the command line with its settings, but
no paths to outputs: the same seed gives the same bytes wherever it is written), `parent_sha256` (the
file it was made from) and the settings of the run. Checkpoints cleaned from a poisoned one also carry
the attack's trigger and target class, so that `evaluate` measures them against the same attack;
defenses never read them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from encoder_clean.encoders.base import Encoder
from encoder_clean.encoders.io import LoadedEncoder, checkpoint_metadata, produced_by

ATTACK_KEYS = ("attack", "trigger", "target_class")


@dataclass(frozen=True)
class Provenance:
    """The metadata a trained encoder is saved with."""

    produced_by: str
    settings: dict[str, object] = field(default_factory=dict)
    parent_sha256: str | None = None

    def metadata(self, encoder: Encoder) -> dict[str, str]:
        """The full metadata strings of `encoder`'s checkpoint (architecture included)."""
        return checkpoint_metadata(encoder, produced_by=self.produced_by, parent_sha256=self.parent_sha256,
                                   settings=self.settings)


def command_line(name: str, options: Mapping[str, Any]) -> str:
    """The command and its settings as a shell line (options that are None or False are left out)."""
    parts = [name]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def inherited_attack(parent: LoadedEncoder | None) -> dict[str, object]:
    """The attack settings `parent` records, to carry on to what is made from it."""
    if parent is None:
        return {}
    return {key: parent.setting(key) for key in ATTACK_KEYS if parent.setting(key) is not None}


def provenance(command: str, recipe: Mapping[str, Any], settings: Mapping[str, object], *,
               parent: LoadedEncoder | None = None, inherit_attack: bool = False) -> Provenance:
    """The provenance of an output of `command` run with `recipe` (its settings as command-line options)
    from `parent`; `settings` are recorded as they are, after `command`, then the inherited attack."""
    recorded: dict[str, object] = {"command": command, **settings}
    if inherit_attack:
        recorded.update(inherited_attack(parent))
    return Provenance(produced_by(command_line(command, recipe)), recorded,
                      parent.sha256 if parent is not None and parent.sha256 else None)
