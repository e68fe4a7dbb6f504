"""The library's Progress protocol (encoder_clean.runtime) rendered on stderr: rich bars on a terminal,
plain lines in a log (CI jobs, `2> file`, pipes), where a bar would show nothing until the end."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgressBar, TextColumn, TimeElapsedColumn

HEARTBEAT_SECONDS = 30.0


def _fields(fields: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:.4g}" for key, value in fields.items())


class RichProgress:
    """rich progress bars on stderr implementing the library's Progress protocol."""

    def __init__(self, console: Console):
        self.console = console

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
        with RichProgressBar(*columns, console=self.console, transient=True) as bar:
            task_id = bar.add_task(description, total=total, info="")

            def advance(n: int = 1, **fields: float) -> None:
                bar.update(task_id, advance=n, info=_fields(fields))

            yield advance


def duration(seconds: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class PlainProgress:
    """Progress as plain lines for logs: one when a phase starts, one when it ends, and in between a
    heartbeat with the step, the rate and the time left every `every` seconds: after a step, or from a
    watcher thread when the steps are slower than that, so that a log is never silent for longer."""

    def __init__(self, stream: TextIO, every: float = HEARTBEAT_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.every = every
        self.clock = clock
        self.lock = threading.Lock()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        started = self.clock()
        state = {"done": 0, "last": started}
        latest: dict[str, float] = {}
        self._line(f"{description}: started" + (f" ({total} steps)" if total else ""))

        def beat() -> None:
            with self.lock:
                now = self.clock()
                if now - state["last"] >= self.every:
                    state["last"] = now
                    self._line(self._heartbeat(description, state["done"], total, now - started, latest))

        def advance(n: int = 1, **fields: float) -> None:
            with self.lock:
                state["done"] += n
                latest.update(fields)
            beat()

        stop = threading.Event()

        def watch() -> None:  # a heartbeat when no line came for `every` seconds (slow steps, long phases)
            while not stop.wait(self.every / 3):
                beat()

        watcher = threading.Thread(target=watch, name=f"progress: {description}", daemon=True)
        watcher.start()
        try:
            yield advance
        finally:
            stop.set()
            watcher.join()
        self._line(f"{description}: done" + (f", {state['done']} steps" if state["done"] else "") +
                   f" in {duration(self.clock() - started)}")

    @staticmethod
    def _heartbeat(description: str, done: int, total: int | None, elapsed: float, fields: dict[str, float]) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"step {done}/{total}" if total else f"step {done}", f"{rate:.3g} steps/s"]
        if total and rate > 0:
            parts.append(f"ETA {duration(max(0, total - done) / rate)}")
        if fields:
            parts.append(_fields(fields))
        return f"{description}: " + ", ".join(parts)
