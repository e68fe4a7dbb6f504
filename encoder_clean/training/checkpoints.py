"""Resumable runs: periodic atomic checkpoints of every training phase, and resuming from them.

A command's training is a sequence of phases, one per `run_steps` call (e.g. `distill --finetune ft`:
the teacher's fine-tuning, the student's warm-up, the distillation). While a `Journal` is active
(`with journal.active():`), every phase saves a checkpoint every so often: the state of what it trains
(models, optimiser, schedule, random generators, batch order), the global RNG, its step and its logged
metrics; and when a phase ends, the state it leaves behind. A resumed run replays the command: phases the
checkpoint had finished restore their end state and return at once, the interrupted phase restores its
mid-run state and continues at the next step. The CPU output is then byte-identical to an uninterrupted
run. Checkpoints hold tensors, numbers and strings only and are read with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from encoder_clean.errors import UserError, first_line
from encoder_clean.fileio import atomic_write, load_tensors_only
from encoder_clean.parallel import world

FORMAT = "encoder-clean-resume/1"


# ------------------------------------------------------------------------------ how often
@dataclass(frozen=True)
class Interval:
    """Save every `steps` optimisation steps, or every `seconds` of wall time; neither: never mid-phase."""

    steps: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Interval":
        """'500' (steps), '90s', '5m', '1h', or '0'/'off' (only at the end of each phase)."""
        text = text.strip().lower()
        if text in ("0", "off", "never"):
            return cls()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text)
        if not match or float(match.group(1)) <= 0 or (not match.group(2) and "." in match.group(1)):
            raise UserError(f"--checkpoint-every {text!r}: give steps (500), a time (90s, 5m, 1h) or off")
        value, unit = float(match.group(1)), match.group(2)
        if not unit:
            return cls(steps=int(value))
        return cls(seconds=value * {"s": 1, "m": 60, "h": 3600}[unit])

    def due(self, steps_since: int, seconds_since: float) -> bool:
        return ((self.steps is not None and steps_since >= self.steps)
                or (self.seconds is not None and seconds_since >= self.seconds))


# ------------------------------------------------------------------------------ saving and restoring state
def capture(value: Any) -> Any:
    """A detached CPU copy of a stateful object's state."""
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, nn.Module):
        return {k: v.detach().cpu().clone() for k, v in value.state_dict().items()}
    if hasattr(value, "state_dict"):  # optimisers, schedules, batch orders, defense-specific state
        return _to_cpu(copy.deepcopy(value.state_dict()))
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def restore(value: Any, saved: Any) -> None:
    """Put `saved` (from `capture`) back into `value`, in place, on `value`'s device."""
    if isinstance(value, torch.Generator):
        value.set_state(saved)
    elif isinstance(value, torch.Tensor):
        with torch.no_grad():
            value.copy_(saved)
    else:
        value.load_state_dict(saved)


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state


def global_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture_all(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"objects": {name: capture(value) for name, value in state.items() if value is not None},
            "rng": global_rng_state()}


def restore_all(state: Mapping[str, Any], saved: Mapping[str, Any], where: str) -> None:
    objects = saved["objects"]
    missing = sorted(set(name for name, value in state.items() if value is not None) ^ set(objects))
    if missing:
        raise UserError(f"{where}: the checkpoint does not match this run (state {', '.join(missing)})")
    try:
        for name, value in state.items():
            if value is not None:
                restore(value, objects[name])
        restore_global_rng(saved["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{where}: the checkpoint does not match this run ({first_line(error)})") from None


# ------------------------------------------------------------------------------ the journal of one run
@dataclass
class Phase:
    """One `run_steps` call as the journal sees it: where to start and what was logged so far."""

    journal: "Journal | None"
    index: int
    description: str
    total: int
    state: Mapping[str, Any]
    start: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False  # a resumed run had finished this phase: its end state is restored
    _last_step: int = 0
    _last_time: float = field(default_factory=time.monotonic)

    def due(self, step: int) -> bool:
        """Whether to save after `step` (1-based) steps; the loop checks the loss before saving."""
        if self.journal is None or step == self.total:
            return False
        return self.journal.interval.due(step - self._last_step, time.monotonic() - self._last_time)

    def save(self, step: int, history: list[dict[str, float]]) -> None:
        if self.journal is not None:
            self.journal.save_current(self, step, history)
        self._last_step, self._last_time = step, time.monotonic()

    def finish(self, history: list[dict[str, float]]) -> None:
        if self.journal is not None:
            self.journal.finish(self, history)


class Journal:
    """Checkpoints of one command run at `path`; `resume` continues from the file if it is there."""

    def __init__(self, path: Path, interval: Interval, identity: str, resume: bool):
        self.path = Path(path)
        self.interval = interval
        self.identity = identity
        self.completed: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.phases_started = 0
        self.saved = load_checkpoint(self.path, identity) if resume and self.path.exists() else None
        self.resumed_from: str | None = None
        if self.saved is not None:
            current = self.saved["current"]
            done = self.saved["completed"]
            self.resumed_from = (f"phase {current['index'] + 1} ({current['description']}) step "
                                 f"{current['step']}" if current else f"after phase {len(done)}")

    # --- phases
    def begin(self, description: str, total: int, state: Mapping[str, Any]) -> Phase:
        index = self.phases_started
        self.phases_started += 1
        phase = Phase(self, index, description, total, state)
        if self.saved is None:
            return phase
        done = self.saved["completed"]
        current = self.saved["current"]
        if index < len(done):
            self._check(done[index], phase)
            restore_all(_lasting(state), done[index]["state"], f"resuming {description}")
            self.completed.append(done[index])
            phase.history = list(done[index]["history"])
            phase.finished = True
        elif current is not None and index == current["index"]:
            self._check(current, phase)
            restore_all(state, current["state"], f"resuming {description}")
            phase.start, phase.history = int(current["step"]), list(current["history"])
            phase._last_step = phase.start
            self.saved = None  # from here on the run is live again
        else:
            self.saved = None
        return phase

    def _check(self, saved: Mapping[str, Any], phase: Phase) -> None:
        if saved["description"] != phase.description or int(saved["total"]) != phase.total:
            raise UserError(f"{self.path}: the checkpoint's phase {phase.index + 1} is {saved['description']!r} "
                            f"of {saved['total']} steps, this run's is {phase.description!r} of {phase.total}; "
                            f"delete the checkpoint or run without --resume")

    def save_current(self, phase: Phase, step: int, history: list[dict[str, float]]) -> None:
        self.current = {"index": phase.index, "description": phase.description, "total": phase.total,
                        "step": step, "history": list(history), "state": capture_all(phase.state)}
        self._write()

    def finish(self, phase: Phase, history: list[dict[str, float]]) -> None:
        if phase.finished:
            return
        self.completed.append({"description": phase.description, "total": phase.total, "history": list(history),
                               "state": capture_all(_lasting(phase.state))})
        self.current = None
        self._write()

    def _write(self) -> None:
        payload = {"format": FORMAT, "identity": self.identity, "completed": self.completed,
                   "current": self.current}
        atomic_write(self.path, lambda tmp: torch.save(payload, tmp))

    def discard(self) -> None:
        """The run's output is written: its checkpoint is no longer needed (rank 0 owns the file)."""
        if world().is_main:
            self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def active(self) -> Iterator["Journal"]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


def _lasting(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a finished phase leaves behind: its optimiser and schedule end with it."""
    return {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}


_ACTIVE: contextvars.ContextVar[Journal | None] = contextvars.ContextVar("encoder_clean_journal", default=None)


def begin_phase(description: str, total: int, state: Mapping[str, Any]) -> Phase:
    """The phase of a `run_steps` call: journalled when a journal is active, else a plain one."""
    journal = _ACTIVE.get()
    if journal is None:
        return Phase(None, 0, description, total, state)
    return journal.begin(description, total, state)


def load_checkpoint(path: Path, identity: str) -> dict[str, Any]:
    """Read a resume checkpoint (tensors, numbers and strings only) and check it belongs to this run."""
    payload = load_tensors_only(path, "a resume checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not an encoder-clean resume checkpoint")
    if payload.get("identity") != identity:
        raise UserError(f"{path}: the checkpoint is from a run with other inputs or settings; "
                        f"delete it or run without --resume")
    completed, current = payload.get("completed"), payload.get("current")
    if not isinstance(completed, list) or not (current is None or isinstance(current, dict)):
        raise UserError(f"{path}: damaged resume checkpoint")
    return payload
