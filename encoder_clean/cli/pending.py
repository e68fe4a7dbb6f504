"""Commands whose implementation lands with a later issue: listed in --help, exit 2 until then."""

from __future__ import annotations

from typing import Callable

import typer

from encoder_clean.cli.common import fail

PENDING = {
    "scan": ("Detect a backdoor by trigger inversion (exit 1 when found), for CI gates.", 5),
}


def make_pending(name: str, summary: str, issue: int) -> Callable[..., None]:
    def command(ctx: typer.Context) -> None:
        raise fail(f"`{name}` is not built yet (issue #{issue}); available now: pretrain, poison, purify, distill, evaluate, demo")

    command.__doc__ = f"{summary} (Not built yet: issue #{issue}.)"
    command.__name__ = name
    return command
