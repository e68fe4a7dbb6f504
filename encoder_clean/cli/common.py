"""What every command shares: option types, error handling, progress and JSON output."""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import click
import torch
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from encoder_clean import __version__
from encoder_clean.cli.progress import PlainProgress, RichProgress
from encoder_clean.errors import EncoderCleanError, UserError, first_line
from encoder_clean.fileio import check_free_space, is_stdout, output_target, write_json_atomic
from encoder_clean.parallel import joined, launched_world, world
from encoder_clean.runtime import NULL_PROGRESS, Progress, compiling, resolve_device
from encoder_clean.schemas import SCHEMA_VERSION
from encoder_clean.training.checkpoints import Interval, Journal

# ------------------------------------------------------------------------------ shared options
DeviceOption = Annotated[str, typer.Option("--device", help="Compute device: auto (CUDA when present), cpu or cuda.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed; the same seed on the CPU gives the same bytes.")]
JsonOption = Annotated[Optional[str], typer.Option(
    "--json", metavar="PATH", help="Also write the result as JSON to PATH ('-' or /dev/stdout for stdout, then "
    "nothing else goes there); docs/json.md has its schema.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress: no bars on a terminal, no progress "
                                           "lines in a log.")]
ArchOption = Annotated[Optional[str], typer.Option(
    "--arch", help="Architecture for files that do not record it (see `encoder-clean list archs`).")]
PrefixOption = Annotated[Optional[str], typer.Option(
    "--prefix", metavar="NAME", help="The network to take from a checkpoint that holds several (its key prefix, "
    "e.g. module.encoder_k); docs/checkpoints.md lists the layouts that load without it.")]
DataOption = Annotated[str, typer.Option(
    "--data", metavar="SPEC", help="Data: builtin[:shapes|glyphs], cifar10:ROOT, stl10:ROOT, gtsrb:ROOT, svhn:ROOT, folder:ROOT, npz:PATH.")]
CleanFractionOption = Annotated[float, typer.Option(
    "--clean-fraction", help="Share of the training split the defender holds clean: a class-balanced sample "
    "drawn by --seed from the images themselves, whatever order the files are in.")]
ResumeOption = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run from the checkpoint it left beside --out (OUT.resume.pt); "
    "the same inputs and settings give the same output as an uninterrupted run. Without a checkpoint, start afresh.")]
CompileOption = Annotated[bool, typer.Option(
    "--compile", help="Compile the trained model with torch.compile: faster steps on a GPU once the first "
    "minute or so of compiling is paid (on the CPU it needs a C++ compiler).")]
DEFAULT_CHECKPOINT_EVERY = "5m"
CheckpointEveryOption = Annotated[str, typer.Option(
    "--checkpoint-every", metavar="STEPS|TIME", help="How often a long run saves its resume checkpoint: steps "
    "(500), a time (90s, 5m, 1h) or off (only between phases). The checkpoint is deleted once --out is written.")]

err_console = Console(stderr=True, highlight=False, emoji=False)  # ":x:" in a path stays text


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    try:
        rank = launched_world().rank  # torchrun's environment outlives the process group
    except UserError:
        rank = 0
    where = f" (rank {rank})" if rank else ""
    err_console.print(f"[bold red]error{where}:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


class OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, an unknown option, a value of the wrong type) as one `error:` line
    and exit code 2 like every other bad input, instead of click's boxed panel."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            sys.exit(error.exit_code)  # the help is already printed
        except click.ClickException as error:
            context = getattr(error, "ctx", None)
            hint = f" (see {context.command_path} --help)" if context is not None else ""
            fail(error.format_message().rstrip(".") + hint)
            sys.exit(error.exit_code)
        except click.Abort:
            fail("aborted")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)  # non-standalone click returns Exit codes


def training_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """What the training commands share around their body: under torchrun the process joins torchrun's
    group (NCCL for --device cuda, gloo on the CPU) and the run is data-parallel; with --compile (the
    command's `compile_model` option) the training loop compiles the models it trains."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with joined(resolve_device(kwargs.get("device", "auto"))), compiling(bool(kwargs.get("compile_model"))):
            return command(*args, **kwargs)

    wrapper.data_parallel = True  # type: ignore[attr-defined]
    return wrapper


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and their exit code (2 bad input, 3 run failed)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if launched_world().parallel and not getattr(command, "data_parallel", False):
                raise UserError(f"{command.__name__} runs in one process: launch it without torchrun "
                                f"(pretrain, poison, purify and distill run data-parallel)")
            return command(*args, **kwargs)
        except EncoderCleanError as error:
            raise fail(first_line(error, limit=10_000),
                       error.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper


# ------------------------------------------------------------------------------ output
PIPED_WIDTH = 10_000  # a log or a pipe has no width: tables keep whole paths on one line


def envelope(command: str, seconds: float) -> dict[str, Any]:
    """The keys every JSON result starts with (docs/json.md; encoder_clean/schemas/envelope.json)."""
    return {"schema_version": SCHEMA_VERSION, "tool": "encoder-clean", "version": __version__, "command": command,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds}


def _command_name() -> str:
    context = click.get_current_context(silent=True)
    return context.info_name if context is not None and context.info_name else "encoder-clean"


class Output:
    """Where a command's human output goes: stdout, or stderr when JSON takes stdout. Created first in
    every command, so a --json that cannot be written is refused before any work."""

    def __init__(self, json_path: str | None, quiet: bool):
        main = world().is_main  # in a data-parallel run, rank 0 alone reports
        to_stdout = is_stdout(json_path)
        if json_path is not None and not to_stdout:
            output_target(json_path, "--json")
        self.json_path = ("-" if to_stdout else json_path) if main else None
        self.quiet = quiet or not main
        stream = sys.stderr if to_stdout else sys.stdout
        self.console = Console(stderr=to_stdout, highlight=False, emoji=False, quiet=not main,
                               width=None if stream.isatty() else PIPED_WIDTH)
        self.started = time.perf_counter()
        self.started_at = datetime.datetime.now(datetime.timezone.utc)

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def progress(self) -> Progress:
        """Bars on a terminal; in a log, a line per phase and a heartbeat (encoder_clean.cli.progress)."""
        if self.quiet:
            return NULL_PROGRESS
        return RichProgress(err_console) if sys.stderr.isatty() else PlainProgress(sys.stderr)

    def emit_json(self, payload: dict[str, Any]) -> None:
        """Write `payload` after the common envelope (its own `seconds` gives way to the envelope's)."""
        if self.json_path is None:
            return
        document = {**envelope(_command_name(), self.seconds),
                    **{key: value for key, value in payload.items() if key != "seconds"}}
        if self.json_path == "-":
            sys.stdout.write(json.dumps(document, indent=2) + "\n")
            sys.stdout.flush()
        else:
            write_json_atomic(self.json_path, document)


# ------------------------------------------------------------------------------ checks
@contextlib.contextmanager
def about(flag: str, value: object) -> Iterator[None]:
    """Name the flag and value in a UserError raised in the block (unless its message already starts with a
    flag, this one or another): the library's messages say what is wrong, the user needs to know which
    option to change."""
    try:
        yield
    except UserError as error:
        if str(error).startswith("--"):
            raise
        raise UserError(f"{flag} {value}: {error}") from None


def check_output(path: Path, suffix: str | tuple[str, ...] = ".safetensors", flag: str = "--out") -> Path:
    """Check an output path before any long work starts: its suffix, and that it is a regular file (or a
    symlink to one, written through) or nothing, in a writable folder (encoder_clean.fileio.output_target)."""
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: must end in {' or '.join(suffixes)}")
    output_target(path, flag)
    return path


def check_room(out: Path, model: torch.nn.Module) -> None:
    """Exit 2 before training when --out's disk cannot take the output and its resume checkpoint: about
    eight copies of the weights (teacher, student, optimiser moments, and the temporary file of each write)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    check_free_space(out.parent, 8 * weights + (1 << 20), f"--out {out}")


def resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume.pt")


def run_identity(command: str, settings: dict[str, Any], *input_sha256: str | None) -> str:
    """What a resume checkpoint must match: the command, every setting that shapes the run, the inputs."""
    return json.dumps({"command": command, "settings": settings, "inputs": list(input_sha256)}, sort_keys=True,
                      default=str)


def _announce(journal: Journal, resume: bool) -> None:
    if journal.resumed_from:
        err_console.print(f"resuming from {journal.path}: {journal.resumed_from}", soft_wrap=True)
    elif resume:
        err_console.print(f"no checkpoint at {journal.path}: starting from the beginning", soft_wrap=True)
    elif journal.path.exists():
        err_console.print(f"note: {journal.path} from an earlier run will be replaced (--resume continues it)",
                          soft_wrap=True)


@contextlib.contextmanager
def resumable(out: Path, resume: bool, every: str, identity: str) -> Iterator[Journal]:
    """Journal the training inside the block to OUT.resume.pt and delete the checkpoint once the block ends
    (after the output is written). Only an interrupted run (Ctrl-C, a kill, a crash) leaves it for --resume:
    after a bad-input error or a failed run, the same command would fail the same way again."""
    journal = Journal(resume_path(out), Interval.parse(every), identity, resume)
    if world().is_main:
        _announce(journal, resume)
    try:
        with journal.active():
            yield journal
    except EncoderCleanError:
        journal.discard()
        raise
    journal.discard()
