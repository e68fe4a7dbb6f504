"""`purify`, `distill` and `demo` end to end on tiny data: outputs, provenance, bad options."""

from __future__ import annotations

import importlib
import json

import pytest
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import load_encoder, save_encoder
from tests.cli.test_cli import ARCH, assert_clean_error, run_cli

TINY = "builtin?train=200&test=60"
runner = CliRunner()
demo_module = importlib.import_module("encoder_clean.cli.demo")  # the package re-exports the command


@pytest.fixture
def poisoned_checkpoint(tmp_path):
    path = tmp_path / "poisoned.safetensors"
    save_encoder(create_encoder(ARCH), path, produced_by="test",
                 settings={"attack": "badencoder", "trigger": "white-square:6", "target_class": 3})
    return path


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("method, options", [
    ("ft", []), ("fp", ["-o", "prune_ratio=0.1"]), ("anp", ["-o", "steps=2"]), ("moth", ["-o", "epochs=1"]),
])
def test_purify_writes_a_checkpoint_with_provenance(method, options, poisoned_checkpoint, tmp_path):
    out = tmp_path / f"{method}.safetensors"
    summary = _ok(["purify", str(poisoned_checkpoint), "--method", method, "--data", TINY, "--clean-fraction", "0.2",
                   "--epochs", "1", "--out", str(out), "--json", "-", *options] if method != "anp" else
                  ["purify", str(poisoned_checkpoint), "--method", method, "--data", TINY, "--clean-fraction", "0.2",
                   "--out", str(out), "--json", "-", *options])
    loaded = load_encoder(str(out))
    assert summary["sha256"] == loaded.sha256 and summary["clean_images"] == 40
    assert loaded.setting("defense") == method and loaded.setting("clean_fraction") == 0.2
    assert loaded.metadata["parent_sha256"] == load_encoder(str(poisoned_checkpoint)).sha256
    # the attack settings travel on, so `evaluate` measures the cleaned encoder against the same attack
    assert loaded.setting("trigger") == "white-square:6" and loaded.setting("target_class") == 3


def test_distill_writes_the_student_with_its_recipe(poisoned_checkpoint, tmp_path):
    out = tmp_path / "student.safetensors"
    summary = _ok(["distill", str(poisoned_checkpoint), "--student", "void", "--loss", "at=500@layer3,layer4",
                   "--loss", "sp", "--finetune", "ft", "--finetune-option", "epochs=1", "--data", TINY,
                   "--clean-fraction", "0.2", "--epochs", "1", "--batch-size", "16", "--out", str(out), "--json", "-"])
    loaded = load_encoder(str(out))
    assert summary["sha256"] == loaded.sha256
    assert loaded.setting("losses") == ["at=500@layer3,layer4", "sp=1@features"]
    assert loaded.setting("student") == "void" and loaded.setting("finetune") == "ft"
    assert loaded.setting("distill_settings")["epochs"] == 1 and loaded.setting("target_class") == 3
    evaluated = _ok(["evaluate", str(out), "--data", TINY, "--probe-epochs", "2", "--json", "-"])
    assert evaluated["trigger"] == "white-square:6"


def test_distill_defaults_are_the_recommended_recipe_and_deterministic(poisoned_checkpoint, tmp_path):
    outs = [tmp_path / f"run{i}.safetensors" for i in range(2)]
    for out in outs:
        _ok(["distill", str(poisoned_checkpoint), "--data", TINY, "--clean-fraction", "0.2", "--epochs", "1",
             "--batch-size", "16", "--out", str(out), "--json", "-"])
    assert outs[0].read_bytes() == outs[1].read_bytes()
    loaded = load_encoder(str(outs[0]))
    from encoder_clean.distill.recipe import RECOMMENDED
    assert loaded.setting("student") == RECOMMENDED.student and loaded.setting("finetune") == RECOMMENDED.finetune


def test_bad_defense_options_give_one_line_and_exit_2(poisoned_checkpoint, tmp_path):
    out = str(tmp_path / "out.safetensors")
    purify = ("purify", str(poisoned_checkpoint), "--data", TINY, "--out", out)
    distill = ("distill", str(poisoned_checkpoint), "--data", TINY, "--out", out)
    cases = [
        (*purify, "--method", "nope"),
        (*purify, "--clean-fraction", "0"),
        (*purify, "--clean-fraction", "1.5"),
        (*purify, "--option", "nosuch=1"),
        (*purify, "--method", "fp", "-o", "prune_ratio=abc"),
        (*purify, "--epochs", "0"),
        (*distill, "--student", "nope"),
        (*distill, "--loss", "nope"),
        (*distill, "--loss", "at=abc"),
        (*distill, "--loss", "at@layer9"),
        (*distill, "--finetune", "nope"),
        (*distill, "--student", "raw", "--student-arch", "resnet18-cifar-w16"),
        (*distill, "--option", "patch_prob=3"),
        (*distill, "--data", "nosuch:thing"),
        ("distill", str(tmp_path / "missing.safetensors"), "--out", out),
    ]
    for case in cases:
        result = runner.invoke(app, list(case))
        assert result.exit_code == 2, (case, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (case, result.stderr)
    assert_clean_error(run_cli(*distill, "--loss", "nope"))  # and once through a real process
    assert not (tmp_path / "out.safetensors").exists()


def test_demo_runs_the_pipeline_and_writes_a_report(tmp_path, monkeypatch):
    # The real demo takes about 3 minutes; the same code on tiny data here.
    monkeypatch.setattr(demo_module, "PRETRAIN_DATA", "builtin:shapes?train=200&test=20")
    monkeypatch.setattr(demo_module, "DOWNSTREAM_DATA", "builtin:glyphs?train=100&test=50")
    monkeypatch.setattr(demo_module, "DEFAULT_ARCH", ARCH)
    monkeypatch.setattr(demo_module, "PRETRAIN_EPOCHS", 1)
    monkeypatch.setattr(demo_module, "POISON_SETTINGS", {"epochs": 1})
    monkeypatch.setattr(demo_module, "CLEAN_FRACTION", 0.2)
    monkeypatch.setattr(demo_module, "RECIPE_OPTIONS", ("epochs=1", "batch_size=16", "warmup_epochs=1"))
    monkeypatch.setattr(demo_module, "FINETUNE_OPTIONS", ("epochs=1",))
    summary = _ok(["demo", "--out-dir", str(tmp_path / "demo"), "--json", "-"])
    assert [row["name"] for row in summary["encoders"]] == ["clean", "poisoned", "cleaned"]
    for name in ("clean", "poisoned", "cleaned"):
        loaded = load_encoder(str(tmp_path / "demo" / f"{name}.safetensors"))
        assert loaded.encoder.arch == ARCH and loaded.setting("precision") == summary["precision"]
    assert summary["precision"] in ("bf16", "fp32")
    report = tmp_path / "demo" / "report"
    assert json.loads((report / "report.json").read_text())["encoders"][2]["name"] == "cleaned"
    assert "| cleaned |" in (report / "summary.md").read_text()
    for png in ("acc.png", "asr.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
