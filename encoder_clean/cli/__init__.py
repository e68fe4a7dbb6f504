"""The `encoder-clean` command line: one module per command, assembled here."""

from __future__ import annotations

import typer

from encoder_clean import __version__
from encoder_clean.cli.demo import demo
from encoder_clean.cli.distill import distill
from encoder_clean.cli.evaluate import evaluate
from encoder_clean.cli.listing import list_registry
from encoder_clean.cli.pending import PENDING, make_pending
from encoder_clean.cli.poison import poison
from encoder_clean.cli.pretrain import pretrain
from encoder_clean.cli.purify import purify

app = typer.Typer(
    name="encoder-clean",
    help="Audit and clean pre-trained self-supervised image encoders of backdoors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("pretrain")(pretrain)
app.command("poison")(poison)
app.command("purify")(purify)
app.command("distill")(distill)
for _name, (_summary, _issue) in PENDING.items():
    app.command(_name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                add_help_option=False)(make_pending(_name, _summary, _issue))
app.command("evaluate")(evaluate)
app.command("demo")(demo)
app.command("list")(list_registry)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"encoder-clean {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    """Audit and clean pre-trained self-supervised image encoders of backdoors."""


def main() -> None:
    app(prog_name="encoder-clean")
