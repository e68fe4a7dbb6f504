"""Every command's --json validates against the schema shipped for it (encoder_clean/schemas)."""

from __future__ import annotations

import datetime
import importlib
import json

import pytest
from typer.testing import CliRunner

from encoder_clean import __version__
from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from encoder_clean.schemas import COMMANDS, SCHEMA_VERSION, load_schema, validator
from tests.cli.test_cli import ARCH

pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")

TINY = "builtin?train=96&test=40"
runner = CliRunner()
demo_module = importlib.import_module("encoder_clean.cli.demo")  # the package re-exports the command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("schema") / "poisoned.safetensors"
    save_encoder(create_encoder(ARCH), path, produced_by="test",
                 settings={"attack": "badencoder", "trigger": "white-square:6", "target_class": 3})
    return str(path)


def run_json(args: list[str], codes: tuple[int, ...] = (0,)) -> dict:
    result = runner.invoke(app, [*args, "--json", "-"])
    assert result.exit_code in codes, result.output
    return json.loads(result.stdout)


def check(command: str, document: dict) -> None:
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
              for error in validator(command).iter_errors(document)]
    assert not errors, errors
    assert document["schema_version"] == SCHEMA_VERSION and document["version"] == __version__
    assert document["command"] == command and list(document)[:6] == [
        "schema_version", "tool", "version", "command", "timestamp", "seconds"]
    stamp = datetime.datetime.fromisoformat(document["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)


def test_every_schema_is_a_valid_draft_2020_12_schema():
    from jsonschema import Draft202012Validator

    for name in ("envelope", *COMMANDS):
        schema = load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith(f":{SCHEMA_VERSION}:{name}")


@pytest.mark.parametrize("command, args", [
    ("pretrain", ["pretrain", "--arch", ARCH, "--data", TINY, "--epochs", "1", "--batch-size", "32"]),
    ("poison", ["poison", "{ckpt}", "--data", TINY, "--epochs", "1", "--batch-size", "32", "--num-references", "2"]),
    ("purify", ["purify", "{ckpt}", "--data", TINY, "--clean-fraction", "0.3", "--epochs", "1"]),
    ("distill", ["distill", "{ckpt}", "--student", "void", "--loss", "sp", "--finetune", "ft", "--finetune-option",
                 "epochs=1", "--data", TINY, "--clean-fraction", "0.3", "--epochs", "1", "--batch-size", "16"]),
])
def test_checkpoint_commands_match_their_schema(command, args, checkpoint, tmp_path):
    out = tmp_path / "out.safetensors"
    document = run_json([arg.replace("{ckpt}", checkpoint) for arg in args] + ["--out", str(out), "--quiet"])
    check(command, document)
    assert document["out"] == str(out)


def test_evaluate_and_scan_match_their_schema(checkpoint):
    for probe in ("linear", "mlp"):
        check("evaluate", run_json(["evaluate", checkpoint, checkpoint, "--data", TINY, "--probe", probe,
                                    "--probe-epochs", "2", "--quiet"]))
    for sources in ([checkpoint], [checkpoint, checkpoint]):
        check("scan", run_json(["scan", *sources, "--data", TINY, "--shadow-images", "8", "-o", "steps=2",
                                "--quiet"], codes=(0, 1)))


def test_list_matches_its_schema():
    from encoder_clean.cli.listing import LISTERS

    for what in LISTERS:
        document = run_json(["list", what])
        check("list", document)
        assert document["what"] == what and document["items"]


def test_demo_matches_its_schema(tmp_path, monkeypatch):
    for name, value in (("PRETRAIN_DATA", "builtin:shapes?train=200&test=20"), ("DOWNSTREAM_DATA",
                        "builtin:glyphs?train=100&test=50"), ("DEFAULT_ARCH", ARCH), ("PRETRAIN_EPOCHS", 1),
                        ("POISON_SETTINGS", {"epochs": 1}), ("CLEAN_FRACTION", 0.2),
                        ("RECIPE_OPTIONS", ("epochs=1", "batch_size=16", "warmup_epochs=1")),
                        ("FINETUNE_OPTIONS", ("epochs=1",))):
        monkeypatch.setattr(demo_module, name, value)
    check("demo", run_json(["demo", "--out-dir", str(tmp_path / "demo"), "--quiet"]))


def test_a_document_that_breaks_the_schema_is_caught(checkpoint):
    document = run_json(["evaluate", checkpoint, "--data", TINY, "--probe-epochs", "2", "--quiet"])
    for broken in ({**document, "schema_version": 0}, {**document, "timestamp": "yesterday"},
                   {key: value for key, value in document.items() if key != "encoders"},
                   {**document, "encoders": [{**document["encoders"][0], "acc": 140}]}):
        assert list(validator("evaluate").iter_errors(broken))


def test_inspect_matches_its_schema(checkpoint):
    document = run_json(["inspect", checkpoint])
    check("inspect", document)
