"""Outputs are complete or absent: full disks, failed writes and failed runs leave nothing half-written."""

from __future__ import annotations

import errno
import importlib
import os
import shutil

from typer.testing import CliRunner

from encoder_clean.cli import app
from tests.cli.test_cli import ARCH, assert_clean_error, run_cli

runner = CliRunner()
PRETRAIN = ["pretrain", "--arch", ARCH, "--data", "builtin?train=64&test=10", "--batch-size", "16", "--quiet"]


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_a_full_disk_is_refused_before_training(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("encoder_clean.fileio.shutil.disk_usage", lambda _: usage._replace(free=1000))
    out = tmp_path / "out.safetensors"
    started = []
    loop = importlib.import_module("encoder_clean.pretrain")  # where api.pretrain finds the training loop
    monkeypatch.setattr(loop, "pretrain_encoder", lambda *a, **k: started.append(1))
    result = runner.invoke(app, [*PRETRAIN, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 2 and "MiB free" in _one_error_line(result)
    assert not started and not out.exists()


def test_a_write_that_fails_midway_leaves_no_file(tmp_path, monkeypatch):
    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("encoder_clean.fileio.os.fsync", no_space)
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, [*PRETRAIN, "--epochs", "0", "--out", str(out)])
    assert result.exit_code == 2 and "No space left on device" in _one_error_line(result)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_a_missing_output_folder_is_refused_up_front(tmp_path):
    result = run_cli(*PRETRAIN, "--epochs", "1", "--out", str(tmp_path / "no" / "such" / "out.safetensors"))
    assert_clean_error(result)


def test_a_diverging_run_exits_3_naming_the_step_and_writes_nothing(tmp_path):
    out = tmp_path / "out.safetensors"
    result = run_cli(*PRETRAIN, "--epochs", "2", "--lr", "1e30", "--out", str(out))
    assert_clean_error(result, code=3)
    assert "non-finite at step" in result.stderr
    assert not out.exists() and not (tmp_path / "out.safetensors.resume.pt").exists()
