"""The `encoder-clean` command line: one module per command, assembled here."""

from __future__ import annotations

import typer

from encoder_clean import __version__
from encoder_clean.cli.common import OneLineErrors
from encoder_clean.cli.demo import demo
from encoder_clean.cli.distill import distill
from encoder_clean.cli.evaluate import evaluate
from encoder_clean.cli.inspect import inspect
from encoder_clean.cli.listing import list_registry
from encoder_clean.cli.poison import poison
from encoder_clean.cli.pretrain import pretrain
from encoder_clean.cli.purify import purify
from encoder_clean.cli.scan import scan

app = typer.Typer(
    name="encoder-clean",
    help="Audit and clean pre-trained self-supervised image encoders of backdoors.",
    no_args_is_help=True,
    cls=OneLineErrors,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal width
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("pretrain")(pretrain)
app.command("poison")(poison)
app.command("purify")(purify)
app.command("distill")(distill)
app.command("scan")(scan)
app.command("evaluate")(evaluate)
app.command("inspect")(inspect)
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
