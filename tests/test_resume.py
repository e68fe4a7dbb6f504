"""Resume: a run interrupted after any checkpoint and resumed writes the same bytes as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from encoder_clean.errors import UserError
from encoder_clean.training import EpochBatcher, checkpoints
from encoder_clean.training.checkpoints import Interval, Journal
from tests.cli.test_cli import ARCH, assert_clean_error, run_cli

TINY = "builtin?train=160&test=20"
runner = CliRunner()


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "encoder.safetensors"
    torch.manual_seed(0)
    save_encoder(create_encoder(ARCH), path, produced_by="test")
    return path


def _run(args):
    result = runner.invoke(app, args)
    return result


class Interrupt(KeyboardInterrupt):
    pass


def _interrupt_after_saves(monkeypatch, count: int) -> list[int]:
    """Make the journal raise Ctrl-C right after its `count`-th checkpoint write (as a kill would land)."""
    writes: list[int] = []
    original = Journal._write

    def write(self):
        original(self)
        writes.append(1)
        if len(writes) == count:
            raise Interrupt

    monkeypatch.setattr(Journal, "_write", write)
    return writes


COMMANDS = {
    "pretrain": lambda src: ["pretrain", "--arch", ARCH, "--epochs", "2", "--batch-size", "32"],
    "poison-drupe": lambda src: ["poison", str(src), "--attack", "drupe", "--epochs", "1", "--batch-size", "32",
                                 "--num-references", "2"],
    "purify-moth": lambda src: ["purify", str(src), "--method", "moth", "--clean-fraction", "0.25", "-o", "epochs=1",
                                "-o", "harden_steps=2", "-o", "inversion_steps=2", "-o", "batch_size=8"],
    "purify-anp": lambda src: ["purify", str(src), "--method", "anp", "--clean-fraction", "0.25", "-o", "steps=6",
                               "-o", "batch_size=16"],
    # three phases, 9 checkpoint writes: the teacher's FT (5 steps: writes at steps 2 and 4, and its end),
    # the student's warm-up (1 step: its end), the distillation (10 steps: 2, 4, 6, 8 and the end)
    "distill": lambda src: ["distill", str(src), "--clean-fraction", "0.5", "--epochs", "2", "--batch-size", "16",
                            "--finetune-option", "epochs=1", "--finetune-option", "batch_size=16",
                            "-o", "warmup_epochs=1", "--loss", "afd"],
    # two rounds of 5 steps with a trigger search before each (writes at 2, 4, end; 2, 4, end): a resume
    # in the second round replays the first round's end and its search on the restored student
    "distill-unlearn": lambda src: ["distill", str(src), "--clean-fraction", "0.5", "--epochs", "2", "--batch-size",
                                    "16", "--finetune", "none", "--student", "raw", "--loss", "sp",
                                    "-o", "inverted_prob=0.5", "-o", "inversion_rounds=2", "-o", "inversion_steps=3"],
}


@pytest.mark.parametrize("name, interrupt_at", [
    ("pretrain", 3), ("poison-drupe", 2), ("purify-moth", 2), ("purify-anp", 3),
    ("distill", 2), ("distill", 4), ("distill", 6), ("distill-unlearn", 4),
])
def test_interrupted_run_resumes_to_identical_bytes(name, interrupt_at, encoder_file, tmp_path, monkeypatch):
    args = [*COMMANDS[name](encoder_file), "--data", TINY, "--quiet", "--checkpoint-every", "2"]
    reference, out = tmp_path / "reference.safetensors", tmp_path / "out.safetensors"
    assert _run([*args, "--out", str(reference)]).exit_code == 0
    checkpoint = tmp_path / "out.safetensors.resume.pt"

    with monkeypatch.context() as patch:
        _interrupt_after_saves(patch, interrupt_at)
        interrupted = _run([*args, "--out", str(out)])
    assert interrupted.exit_code == 130 and not out.exists() and checkpoint.exists()

    resumed = _run([*args, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not checkpoint.exists()  # removed once the output is written


def test_resume_refuses_a_checkpoint_of_other_settings(encoder_file, tmp_path, monkeypatch):
    args = [*COMMANDS["pretrain"](encoder_file), "--data", TINY, "--quiet", "--checkpoint-every", "2",
            "--out", str(tmp_path / "out.safetensors")]
    with monkeypatch.context() as patch:
        _interrupt_after_saves(patch, 1)
        assert _run(args).exit_code == 130
    result = _run([*args, "--seed", "1", "--resume"])
    assert result.exit_code == 2 and "other inputs or settings" in result.stderr


def test_resume_refuses_a_corrupt_checkpoint_with_one_line(tmp_path):
    out = tmp_path / "out.safetensors"
    (tmp_path / "out.safetensors.resume.pt").write_bytes(b"\x80\x04 not a checkpoint")
    result = run_cli("pretrain", "--arch", ARCH, "--epochs", "1", "--data", TINY, "--out", str(out), "--resume")
    assert_clean_error(result)
    assert "resume checkpoint" in result.stderr and not out.exists()


def test_killed_process_resumes_to_identical_bytes(tmp_path):
    """A real SIGKILL between checkpoints, through the console entry point."""
    args = ["pretrain", "--arch", ARCH, "--epochs", "3", "--batch-size", "16", "--data", TINY, "--quiet",
            "--checkpoint-every", "1"]
    reference, out = tmp_path / "reference.safetensors", tmp_path / "out.safetensors"
    assert run_cli(*args, "--out", str(reference)).returncode == 0
    checkpoint = tmp_path / "out.safetensors.resume.pt"
    process = subprocess.Popen([sys.executable, "-m", "encoder_clean", *args, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    result = run_cli(*args, "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == reference.read_bytes()


def test_interval_parses_steps_times_and_off():
    assert Interval.parse("500") == Interval(steps=500)
    assert Interval.parse("90s") == Interval(seconds=90) and Interval.parse("5m") == Interval(seconds=300)
    assert Interval.parse("off") == Interval()
    for bad in ("-3", "1.5", "soon", "5x", ""):
        with pytest.raises(UserError):
            Interval.parse(bad)


def test_batch_order_restores_mid_epoch():
    g = torch.Generator().manual_seed(0)
    batches = iter(EpochBatcher(10, 3, g))
    [next(batches) for _ in range(2)]
    saved, g_state = checkpoints.capture(batches), g.get_state()
    expected = [next(batches) for _ in range(5)]
    checkpoints.restore(batches, saved)
    g.set_state(g_state)
    assert all(torch.equal(a, b) for a, b in zip(expected, [next(batches) for _ in range(5)]))
