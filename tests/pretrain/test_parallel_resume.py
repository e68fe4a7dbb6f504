"""Every method under torchrun computes what one process computes, and resumes to the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.parallel.test_parallel import run, torchrun
from tests.test_resume import COMMANDS, TINY, _interrupt_after_saves, _run

WORKER = Path(__file__).with_name("worker.py")


def test_two_gloo_processes_train_every_method_like_one(tmp_path):
    """2 SGD steps of 16 images: global BatchNorm in the momentum copies too, MoCo's keys gathered from
    both ranks into the queue in rank order, BYOL's predictor gradients averaged, DirectPred's correlation
    taken over both ranks' rows. Measured: the two
    runs' encoders differ by 5e-7 (SimCLR) to 3.3e-4 (symmetric MoCo) of how far training moved them,
    and the queues, momentum copies and predictors by at most 1.4e-6."""
    alone = run(str(WORKER), "one.pt", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    pair = torchrun(str(WORKER), "two.pt", cwd=tmp_path)
    assert pair.returncode == 0, pair.stderr
    one, two = (torch.load(tmp_path / name, weights_only=True) for name in ("one.pt", "two.pt"))
    assert sorted(one) == sorted(two)
    runs = {key.split("/")[0] for key in one}
    assert runs == {"simclr", "mocov2", "mocov2-symmetric", "byol", "byol-direct"}
    assert "mocov2/objective/queue" in one and "byol/objective/predictor.layers.0.weight" in one
    assert "byol-direct/objective/predictor.correlation" in one  # DirectPred's correlation: every rank's rows
    for run_name in runs:
        weights = [k for k in one if k.startswith(f"{run_name}/encoder/") and one[k].is_floating_point()]
        gap = torch.cat([(one[k] - two[k]).flatten() for k in weights]).norm()
        moved = torch.cat([(one[k] - one[k.replace("/encoder/", "/start/")]).flatten() for k in weights]).norm()
        assert gap < 1e-2 * moved, (run_name, float(gap), float(moved))
    for key in (k for k in one if "/objective/" in k):
        if one[key].is_floating_point():
            assert torch.allclose(one[key], two[key], atol=1e-4), key
        else:
            assert torch.equal(one[key], two[key]), key


@pytest.mark.parametrize("method", ["mocov2", "byol"])
def test_an_interrupted_run_of_each_method_resumes_to_identical_bytes(method, tmp_path, monkeypatch):
    """The queue, its pointer, the momentum copy and BYOL's step count are in the checkpoint. (SimCLR:
    tests/test_resume.py.)"""
    args = [*COMMANDS["pretrain"](None), "--method", method, "--data", TINY, "--quiet", "--checkpoint-every", "2"]
    reference, out = tmp_path / "reference.safetensors", tmp_path / "out.safetensors"
    assert _run([*args, "--out", str(reference)]).exit_code == 0
    with monkeypatch.context() as patch:
        _interrupt_after_saves(patch, 3)  # mid-run: after step 6 of 10
        assert _run([*args, "--out", str(out)]).exit_code == 130
    resumed = _run([*args, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() == reference.read_bytes()
