"""JSON Schemas (draft 2020-12) of what each command writes with `--json`, shipped with the package.

Every document starts with the envelope (`envelope.json`): schema_version, tool, version, command,
timestamp, seconds. `SCHEMA_VERSION` goes up only when a key is removed or changes meaning; new keys may
appear in any version, so readers should ignore keys they do not know. docs/json.md describes them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1
COMMANDS = ("pretrain", "poison", "purify", "distill", "evaluate", "scan", "demo", "list", "inspect")
ID_PREFIX = f"urn:encoder-clean:json:{SCHEMA_VERSION}:"


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """The schema of command `name` (or `envelope`) as a dict."""
    if name not in (*COMMANDS, "envelope"):
        raise KeyError(f"no JSON schema named {name!r}; known: envelope, {', '.join(COMMANDS)}")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))


def validator(name: str) -> Any:
    """A jsonschema validator for command `name`, with the envelope resolvable by its $id and formats
    (date-time) checked. Needs the `jsonschema` package (the dev extra)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (load_schema(part)["$id"], Resource.from_contents(load_schema(part))) for part in ("envelope", *COMMANDS))
    return Draft202012Validator(load_schema(name), registry=registry,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)
