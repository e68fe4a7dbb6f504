"""The shared training-loop core and batcher."""

from __future__ import annotations

import pytest
import torch

from encoder_clean.errors import RunFailed, UserError
from encoder_clean.training import EpochBatcher, run_steps


def test_batcher_yields_every_sample_once_per_epoch():
    batcher = EpochBatcher(10, 3, torch.Generator().manual_seed(0))
    batches = iter(batcher)
    epoch = torch.cat([next(batches) for _ in range(batcher.steps_per_epoch)])
    assert len(epoch) == 9 and len(set(epoch.tolist())) == 9  # last incomplete batch dropped
    assert batcher.steps_per_epoch == 3
    small = iter(EpochBatcher(5, 64, torch.Generator().manual_seed(0)))
    assert sorted(next(small).tolist()) == [0, 1, 2, 3, 4]


def test_batcher_rejects_degenerate_sizes():
    with pytest.raises(UserError):
        EpochBatcher(1, 4, torch.Generator())
    with pytest.raises(UserError):
        EpochBatcher(10, 1, torch.Generator())


def test_run_steps_optimises_and_logs():
    weight = torch.nn.Parameter(torch.tensor([5.0]))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    history = run_steps(lambda i: (weight ** 2).sum(), optimizer, 50, log_every=10)
    assert [h["step"] for h in history] == [10, 20, 30, 40, 50]
    assert history[-1]["loss"] < history[0]["loss"] < 25


def test_non_finite_loss_stops_the_run_naming_the_step():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def step(i):
        return weight.sum() * (float("nan") if i == 12 else 1.0)

    # the 13th step (index 12) is named, though the loss is read back only every 10 steps
    with pytest.raises(RunFailed, match="non-finite at step 13$"):
        run_steps(step, optimizer, 30, log_every=10)
