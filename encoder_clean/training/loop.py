"""One loop for every training command: step, optimise, schedule, watch the loss, checkpoint, report."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from encoder_clean.errors import RunFailed
from encoder_clean.parallel import replicated
from encoder_clean.runtime import NULL_PROGRESS, Progress, compile_modules
from encoder_clean.training.checkpoints import begin_phase

StepFn = Callable[[int], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero, by step."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class FirstNonFinite:
    """The first step whose loss was NaN or inf, tracked on the loss's device without a host sync."""

    def __init__(self) -> None:
        self.step: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        if self.step is None:
            self.step = torch.zeros((), dtype=torch.long, device=loss.device)
        self.step = torch.where((self.step == 0) & bad, step, self.step)

    def check(self, description: str) -> None:
        if self.step is not None and int(self.step):
            raise RunFailed(f"{description}: the loss became non-finite at step {int(self.step)}")


def run_steps(step: StepFn, optimizer: torch.optim.Optimizer, total_steps: int, *,
              scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
              state: Mapping[str, Any] | None = None,
              progress: Progress = NULL_PROGRESS, description: str = "training",
              log_every: int = 10, after_step: Callable[[], None] | None = None) -> list[dict[str, float]]:
    """Run `total_steps` optimisation steps of `step(i) -> loss` (or `(loss, extra_metrics)`).

    `state` names everything else the steps change or draw from (models, random generators, batch
    iterators, tensors): with the optimiser and schedule it is what a resume checkpoint saves (see
    `checkpoints`). The loss is read back to the host only every `log_every` steps and before a
    checkpoint; a non-finite loss raises RunFailed naming the first bad step. Under torchrun the steps of
    all ranks are one data-parallel run (see `encoder_clean.parallel`). Returns the logged metrics.
    """
    phase = begin_phase(description, total_steps, {"optimizer": optimizer, "scheduler": scheduler, **(state or {})})
    if phase.finished:
        return phase.history
    history = phase.history
    compile_modules(v for v in (state or {}).values() if isinstance(v, torch.nn.Module))
    watch = FirstNonFinite()
    with replicated(optimizer, state or {}) as call, progress.task(description, total=total_steps) as advance:
        if phase.start:
            advance(phase.start)
        pending = 0
        for index in range(phase.start, total_steps):
            optimizer.zero_grad(set_to_none=True)
            result = call(step, index)
            loss, extra = result if isinstance(result, tuple) else (result, {})
            loss.backward()
            watch.observe(loss, index + 1)
            optimizer.step()
            if after_step is not None:
                after_step()
            if scheduler is not None:
                scheduler.step()
            pending += 1
            if (index + 1) % log_every == 0 or index + 1 == total_steps:
                watch.check(description)
                metrics = {"step": index + 1, "loss": float(loss.detach())}
                metrics.update({k: float(v) for k, v in extra.items()})
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise RunFailed(f"{description}: a metric became non-finite at step {index + 1} ({metrics})")
                history.append(metrics)
                advance(pending, loss=metrics["loss"])
                pending = 0
            if phase.due(index + 1):
                watch.check(description)
                phase.save(index + 1, history)
    phase.finish(history)
    return history
