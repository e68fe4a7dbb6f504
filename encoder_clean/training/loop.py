"""One loop for every training command: step, optimise, schedule, watch the loss, report progress."""

from __future__ import annotations

import math
from typing import Callable

import torch

from encoder_clean.errors import RunFailed
from encoder_clean.runtime import NULL_PROGRESS, Progress

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


def run_steps(step: StepFn, optimizer: torch.optim.Optimizer, total_steps: int, *,
              scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
              progress: Progress = NULL_PROGRESS, description: str = "training",
              log_every: int = 10, after_step: Callable[[], None] | None = None) -> list[dict[str, float]]:
    """Run `total_steps` optimisation steps of `step(i) -> loss` (or `(loss, extra_metrics)`).

    The loss is read back to the host only every `log_every` steps (no sync in between); a non-finite
    loss raises RunFailed naming the step. Returns the logged metrics.
    """
    history: list[dict[str, float]] = []
    with progress.task(description, total=total_steps) as advance:
        pending = 0
        for index in range(total_steps):
            optimizer.zero_grad(set_to_none=True)
            result = step(index)
            loss, extra = result if isinstance(result, tuple) else (result, {})
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            if scheduler is not None:
                scheduler.step()
            pending += 1
            if (index + 1) % log_every == 0 or index + 1 == total_steps:
                metrics = {"step": index + 1, "loss": float(loss.detach())}
                metrics.update({k: float(v) for k, v in extra.items()})
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise RunFailed(f"{description}: the loss became non-finite at step {index + 1} "
                                    f"({metrics['loss']})")
                history.append(metrics)
                advance(pending, loss=metrics["loss"])
                pending = 0
    return history
