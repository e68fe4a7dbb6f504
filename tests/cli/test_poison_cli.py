"""`encoder-clean poison` end to end on tiny data: provenance metadata, evaluate reuse, bad options."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import load_encoder, save_encoder
from tests.cli.test_cli import ARCH, assert_clean_error, run_cli

TINY = "builtin?train=96&test=60"
runner = CliRunner()


@pytest.fixture
def clean_checkpoint(tmp_path):
    path = tmp_path / "clean.safetensors"
    save_encoder(create_encoder(ARCH), path, produced_by="test")
    return path


@pytest.mark.parametrize("attack, extra", [
    ("badencoder", ["--num-references", "2"]),
    ("drupe", ["--num-references", "2", "--option", "swd_projections=8"]),
    ("bassl", ["--option", "poison_rate=0.1"]),
    ("ctrl", ["--trigger", "ctrl:80"]),
])
def test_poison_writes_provenance_that_evaluate_reuses(attack, extra, clean_checkpoint, tmp_path):
    out = tmp_path / f"{attack}.safetensors"
    result = runner.invoke(app, ["poison", str(clean_checkpoint), "--attack", attack, "--target-class", "2",
                                 "--data", TINY, "--epochs", "1", "--batch-size", "32", "--out", str(out),
                                 "--json", "-", *extra])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    loaded = load_encoder(str(out))
    assert summary["sha256"] == loaded.sha256 and summary["attack"] == attack
    assert loaded.setting("attack") == attack and loaded.setting("target_class") == 2
    assert loaded.setting("trigger") == summary["trigger"]
    assert loaded.metadata["parent_sha256"] == load_encoder(str(clean_checkpoint)).sha256
    hashes = loaded.setting("references_sha256")
    assert isinstance(hashes, list) and hashes and all(len(h) == 16 for h in hashes)
    assert loaded.setting("attack_settings")["epochs"] == 1
    evaluated = runner.invoke(app, ["evaluate", str(out), "--data", TINY, "--probe-epochs", "2", "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["trigger"] == summary["trigger"] and report["target_class"] == 2


def test_poison_is_deterministic(clean_checkpoint, tmp_path):
    outs = [tmp_path / f"run{i}.safetensors" for i in range(2)]
    for out in outs:
        result = runner.invoke(app, ["poison", str(clean_checkpoint), "--data", TINY, "--epochs", "1",
                                     "--batch-size", "32", "--num-references", "2", "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_bad_poison_options_give_one_line_and_exit_2(clean_checkpoint, tmp_path):
    out = str(tmp_path / "out.safetensors")
    base = ("poison", str(clean_checkpoint), "--data", TINY, "--out", out)
    cases = [
        ("--attack", "nope"),
        ("--target-class", "10"),
        ("--target-class", "-1"),
        ("--trigger", "white-square:40"),
        ("--trigger", "rainbow"),
        ("--preset", "slow"),
        ("--option", "nosuch=1"),
        ("--option", "lr=abc"),
        ("--option", "lr"),
        ("--epochs", "0"),
        ("--num-references", "5000"),
        ("--attack", "bassl", "--option", "poison_rate=2"),
        ("--attack", "bassl", "--trigger", "ctrl"),
        ("--reference-data", "nosuch:thing"),
    ]
    for case in cases:
        result = runner.invoke(app, [*base, *case])
        assert result.exit_code == 2, (case, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (case, result.stderr)
    assert_clean_error(run_cli(*base, "--attack", "nope"))  # and once through a real process
    assert not (tmp_path / "out.safetensors").exists()
