"""`pretrain --warmup-steps`: the learning-rate warm-up is a setting of every pre-training run, capped at a
tenth of the run, and checkpoints record it."""

from __future__ import annotations

import pytest
import torch

import encoder_clean as ec
from encoder_clean.cli import app
from encoder_clean.encoders.io import load_encoder
from tests.cli.test_cli import ARCH, runner

TINY = "builtin?train=64&test=20"  # 8 steps an epoch at batch 8: 24 steps in 3 epochs, a warm-up of 2 at most


def _weights(warmup_steps: int) -> dict[str, torch.Tensor]:
    config = ec.PretrainConfig(arch=ARCH, epochs=3, batch_size=8, warmup_steps=warmup_steps)
    return ec.pretrain(TINY, config, device="cpu").encoder.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_the_warm_up_changes_the_run_up_to_a_tenth_of_it():
    none, capped, beyond = _weights(0), _weights(2), _weights(50)
    assert not _same(none, capped)
    assert _same(capped, beyond)  # 50 steps asked, 2 (a tenth of 24) given


def test_the_checkpoint_records_the_warm_up_and_a_negative_one_is_refused(tmp_path):
    out = tmp_path / "byol.safetensors"
    common = ["pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "1", "--batch-size", "32", "--device", "cpu"]
    result = runner.invoke(app, [*common, "--method", "byol", "--warmup-steps", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_encoder(str(out)).setting("warmup_steps") == 7
    refused = tmp_path / "refused.safetensors"
    result = runner.invoke(app, [*common, "--warmup-steps", "-1", "--out", str(refused)])
    assert result.exit_code == 2 and "warmup_steps -1" in result.output and not refused.exists()
