"""`encoder-clean scan` through a real subprocess: exit codes, JSON, SARIF 2.1.0 and the trigger PNG."""

from __future__ import annotations

import datetime
import json
import subprocess

import pytest
import torch
from PIL import Image

from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from encoder_clean.scan.report import sarif_log
from tests.cli.test_cli import assert_clean_error, run_cli

DATA = "builtin:shapes?train=64&test=10"
FAST = ("--data", DATA, "--shadow-images", "64", "-o", "steps=3", "-o", "batch_size=4", "-o", "grid=3",
        "-o", "eval_images=8",
        "--device", "cpu", "-q")
SARIF_LEVELS = {"none", "note", "warning", "error"}


def scan(*args: str) -> subprocess.CompletedProcess:
    return run_cli("scan", *args)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = folder / f"enc{seed}.safetensors"
        save_encoder(create_encoder("resnet10-cifar-w8"), path, produced_by="test")
        paths.append(str(path))
    return paths


def check_sarif(log: dict) -> None:
    """The fields SARIF 2.1.0's schema requires, and the enums it restricts."""
    assert log["version"] == "2.1.0" and isinstance(log["runs"], list) and log["runs"]
    for run in log["runs"]:
        assert isinstance(run["tool"]["driver"]["name"], str)
        rule_ids = {rule["id"] for rule in run["tool"]["driver"].get("rules", [])}
        for result in run["results"]:
            assert isinstance(result["message"]["text"], str) and result["message"]["text"]
            assert result["level"] in SARIF_LEVELS
            assert result["kind"] in {"notApplicable", "pass", "fail", "review", "open", "informational"}
            assert result["ruleId"] in rule_ids
            for location in result["locations"]:
                assert isinstance(location["physicalLocation"]["artifactLocation"]["uri"], str)


def test_clean_verdict_exits_0_with_json_and_png(checkpoints, tmp_path):
    png = tmp_path / "trigger.png"
    result = scan(checkpoints[0], *FAST, "--threshold", "1000", "--trigger-out", str(png), "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "clean" and report["version"] and report["seconds"] > 0
    for key in ("source", "score", "threshold", "margin", "pl1_norm", "trigger_png"):  # docs/json.md's single-encoder fields
        assert key in report
    assert report["threshold"] == 1000 and 0 <= report["pl1_norm"] <= 1
    assert report["margin"] == pytest.approx(report["score"] - 1000, abs=1e-6) and report["margin"] < 0
    row = report["encoders"][0]
    assert row["score_name"] == "collapse score" and row["window"]["size"] == 12
    with Image.open(png) as image:  # stamped shadow image | stamp | mask | pattern
        assert image.format == "PNG" and image.width == 4 * image.height


def test_decree_method_reports_its_pl1_norm(checkpoints):
    result = scan(checkpoints[0], "--data", DATA, "--shadow-images", "16", "--method", "decree", "-o", "max_epochs=2",
                  "-o", "batch_size=8", "--device", "cpu", "-q", "--json", "-")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["method"] == "decree" and report["threshold"] == 0.9
    assert report["score"] == pytest.approx(1 - report["pl1_norm"], abs=1e-6)


def test_backdoor_verdict_exits_1_and_sarif_says_error(checkpoints, tmp_path):
    sarif = tmp_path / "scan.sarif"
    result = scan(checkpoints[0], *FAST, "--threshold", "-1000", "--sarif", str(sarif))
    assert result.returncode == 1, result.stderr
    assert "backdoor" in result.stdout
    log = json.loads(sarif.read_text())
    check_sarif(log)
    assert [r["level"] for r in log["runs"][0]["results"]] == ["error"]
    properties = log["runs"][0]["results"][0]["properties"]
    assert properties["threshold"] == -1000 and properties["margin"] > 0 and "score" in properties


def test_several_encoders_one_table_and_numbered_pngs(checkpoints, tmp_path):
    png = tmp_path / "t.png"
    result = scan(*checkpoints, *FAST, "--threshold", "1000", "--trigger-out", str(png), "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"] == {"scanned": 2, "backdoor": 0, "clean": 2}
    assert [row["trigger_png"] for row in report["encoders"]] == [str(tmp_path / "t-1.png"), str(tmp_path / "t-2.png")]
    assert (tmp_path / "t-1.png").exists() and (tmp_path / "t-2.png").exists()


def test_sarif_levels_follow_the_verdicts():
    rows = [{"source": "a", "verdict": "backdoor", "pl1_norm": 0.01, "threshold": 0.05, "score": 0.99},
            {"source": "b", "verdict": "clean", "pl1_norm": 0.2, "threshold": 0.05, "score": 0.8}]
    now = datetime.datetime.now(datetime.timezone.utc)
    log = sarif_log(rows, now, now, 1)
    check_sarif(log)
    assert [r["level"] for r in log["runs"][0]["results"]] == ["error", "none"]  # SARIF 3.27.10: none unless fail


@pytest.mark.parametrize("extra", [
    ("--threshold", "nan"),
    ("--method", "nope"),
    ("-o", "steps=0"),
    ("-o", "bogus=1"),
    ("--shadow-images", "1"),
    ("--data", "npz:/no/such.npz"),
    ("--trigger-out", "trigger.jpg"),
    ("--sarif", "/no/such/folder/x.sarif"),
])
def test_bad_input_exits_2_with_one_line(checkpoints, extra):
    assert_clean_error(scan(checkpoints[0], *FAST, *extra))


def test_missing_or_corrupt_encoder_exits_2(tmp_path, checkpoints):
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    assert_clean_error(scan(str(tmp_path / "missing.safetensors"), *FAST))
    assert_clean_error(scan(checkpoints[0], str(corrupt), *FAST))


def test_a_scan_that_fails_partway_leaves_no_trigger_png(checkpoints, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from encoder_clean import api
    from encoder_clean.cli import app
    from encoder_clean.errors import RunFailed

    real_scan, calls = api.scan, []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RunFailed("the second scan failed")
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(api, "scan", second_fails)
    result = CliRunner().invoke(app, ["scan", *checkpoints, *FAST, "--trigger-out", str(tmp_path / "t.png")])
    assert result.exit_code == 3 and len(calls) == 2, result.output
    assert list(tmp_path.iterdir()) == []
