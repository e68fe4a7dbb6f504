"""The command line through a real subprocess and through Typer's runner."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import load_encoder, save_encoder

TINY = "builtin?train=64&test=40"
ARCH = "resnet10-cifar-w8"
runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "encoder_clean", *args], capture_output=True, text=True,
                          timeout=300)


def assert_clean_error(result: subprocess.CompletedProcess, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("pretrain", "poison", "scan", "purify", "distill", "evaluate", "demo"):
        assert name in result.stdout


def test_pretrain_then_evaluate_end_to_end(tmp_path):
    out = tmp_path / "clean.safetensors"
    result = run_cli("pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "1", "--batch-size", "32",
                     "--out", str(out), "--device", "cpu", "--json", "-")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["steps"] == 2 and len(summary["sha256"]) == 64
    loaded = load_encoder(str(out))
    assert loaded.metadata["produced_by"].startswith("encoder-clean ") and loaded.setting("epochs") == 1

    report = tmp_path / "eval.json"
    result = run_cli("evaluate", str(out), str(out), "--data", TINY, "--probe-epochs", "5", "--json",
                     str(report), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    payload = json.loads(report.read_text())
    assert payload["trigger"] == "white-square" and payload["target_class"] == 0
    assert payload["probe"] == "linear" and len(payload["encoders"]) == 2
    row = payload["encoders"][0]
    assert {"source", "acc", "asr", "asr_nontarget"} <= set(row) and 0 <= row["acc"] <= 100
    assert payload["encoders"][0]["acc"] == payload["encoders"][1]["acc"]  # same seed, same probe
    assert "ACC" in result.stdout


def test_same_seed_gives_identical_checkpoint_bytes(tmp_path):
    outs = [tmp_path / f"{i}.safetensors" for i in range(2)]
    for out in outs:
        result = runner.invoke(app, ["pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "1",
                                     "--batch-size", "32", "--out", str(out), "--device", "cpu", "--seed", "7"])
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_epochs_zero_writes_the_random_initialisation(tmp_path):
    out = tmp_path / "random.safetensors"
    result = runner.invoke(app, ["pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_encoder(str(out)).setting("epochs") == 0


def test_evaluate_uses_trigger_and_target_recorded_in_the_checkpoint(tmp_path):
    path = tmp_path / "poisoned.safetensors"
    save_encoder(create_encoder(ARCH), path, produced_by="test",
                 settings={"trigger": "checkerboard:4", "target_class": 3})
    result = runner.invoke(app, ["evaluate", str(path), "--data", TINY, "--probe-epochs", "2", "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["trigger"] == "checkerboard:4" and payload["target_class"] == 3


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    good = tmp_path / "good.safetensors"
    save_encoder(create_encoder(ARCH), good, produced_by="test")
    cases = [
        ("evaluate", str(tmp_path / "missing.safetensors"), "--data", TINY),
        ("evaluate", str(corrupt), "--data", TINY),
        ("evaluate", str(good), "--data", "nosuch:thing"),
        ("evaluate", str(good), "--data", TINY, "--trigger", "rainbow"),
        ("evaluate", str(good), "--data", TINY, "--target-class", "12"),
        ("evaluate", str(good), "--data", TINY, "--probe", "svm"),
        ("evaluate", str(good), "--data", TINY, "--arch", "resnet18-cifar"),
        ("pretrain", "--out", str(tmp_path / "x.safetensors"), "--arch", "nope", "--data", TINY),
        ("pretrain", "--out", str(tmp_path / "no" / "x.safetensors"), "--data", TINY),
        ("pretrain", "--out", str(tmp_path / "x.pt"), "--data", TINY),
        ("pretrain", "--out", str(tmp_path / "x.safetensors"), "--device", "tpu", "--data", TINY),
    ]
    for case in cases:
        assert_clean_error(run_cli(*case))
    assert not (tmp_path / "x.safetensors").exists()


def test_version_and_list():
    assert run_cli("--version").stdout.startswith("encoder-clean ")
    result = runner.invoke(app, ["list", "archs"])
    assert result.exit_code == 0 and "resnet18-cifar-w16" in result.output
    for what, expected in (("defenses", "prune_ratio"), ("students", "warmup"), ("losses", "similarity"),
                           ("attacks", "badencoder"), ("scans", "decree")):
        result = runner.invoke(app, ["list", what])
        assert result.exit_code == 0 and expected in result.output, what
