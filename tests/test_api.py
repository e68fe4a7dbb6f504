"""The Python API end to end on tiny built-in data: the documented dataclasses come back, nothing is
printed, progress reaches the callback, and the same seed gives the same bytes as the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import encoder_clean as ec
from encoder_clean.cli import app
from encoder_clean.errors import UserError

TINY = "builtin?train=64&test=40"
ARCH = "resnet10-cifar-w8"
runner = CliRunner()


def cli(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--device", "cpu", "--quiet", "--json", "-"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "clean.safetensors"
    ec.pretrain(TINY, ec.PretrainConfig(arch=ARCH, epochs=1, batch_size=32), device="cpu").save(path)
    return path


def test_pretrain_returns_a_result_prints_nothing_and_matches_the_cli(tmp_path, capsys):
    events: list[ec.ProgressEvent] = []
    result = ec.pretrain(TINY, ec.PretrainConfig(arch=ARCH, epochs=1, batch_size=32), device="cpu",
                         progress=events.append)
    assert capsys.readouterr() == ("", "")
    assert isinstance(result, ec.TrainResult) and result.encoder.arch == ARCH
    assert result.report["steps"] == 2 and result.provenance.settings["command"] == "pretrain"
    assert events and events[0].done == 0 and events[-1].done == events[-1].total == 2
    sha = result.save(tmp_path / "api.safetensors")
    payload = cli("pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "1", "--batch-size", "32",
                  "--out", str(tmp_path / "cli.safetensors"))
    assert payload["sha256"] == sha
    assert (tmp_path / "api.safetensors").read_bytes() == (tmp_path / "cli.safetensors").read_bytes()


def test_poison_leaves_its_input_alone_and_matches_the_cli(tmp_path, clean):
    loaded = ec.load_encoder(clean)
    before = {key: value.clone() for key, value in loaded.encoder.state_dict().items()}
    config = ec.PoisonConfig(epochs=1, batch_size=16, num_references=2)
    result = ec.poison(loaded, TINY, config, device="cpu")
    assert all(torch.equal(before[key], value) for key, value in loaded.encoder.state_dict().items())
    assert result.provenance.parent_sha256 == loaded.sha256
    assert result.report["attack"] == "badencoder" and result.report["references"] == 2
    sha = result.save(tmp_path / "api.safetensors")
    payload = cli("poison", str(clean), "--data", TINY, "--epochs", "1", "--batch-size", "16",
                  "--num-references", "2", "--out", str(tmp_path / "cli.safetensors"))
    assert payload["sha256"] == sha
    recorded = ec.load_encoder(tmp_path / "api.safetensors")
    assert recorded.setting("trigger") == "white-square" and recorded.setting("target_class") == 0


def test_settings_as_a_mapping_or_as_strings_are_the_same_run(clean):
    as_map = ec.PurifyConfig(method="ft", clean_fraction=0.5, options={"epochs": 1, "batch_size": 16})
    as_strings = ec.PurifyConfig(method="ft", clean_fraction=0.5, options=["epochs=1", "batch_size=16"])
    first = ec.purify(clean, TINY, as_map, device="cpu")
    second = ec.purify(clean, TINY, as_strings, device="cpu")
    assert first.report["settings"] == second.report["settings"]
    assert all(torch.equal(a, b) for a, b in zip(first.encoder.state_dict().values(),
                                                 second.encoder.state_dict().values()))


def test_purify_matches_the_cli_and_carries_the_attack_on(tmp_path, clean):
    poisoned = tmp_path / "poisoned.safetensors"
    ec.poison(clean, TINY, ec.PoisonConfig(epochs=1, batch_size=16, num_references=2, target_class=3),
              device="cpu").save(poisoned)
    result = ec.purify(poisoned, TINY, ec.PurifyConfig(clean_fraction=0.5, epochs=1), device="cpu")
    assert result.provenance.settings["target_class"] == 3 and result.report["clean_images"] == 32
    sha = result.save(tmp_path / "api.safetensors")
    payload = cli("purify", str(poisoned), "--data", TINY, "--clean-fraction", "0.5", "--epochs", "1",
                  "--out", str(tmp_path / "cli.safetensors"))
    assert payload["sha256"] == sha


def test_distill_returns_the_student_and_matches_the_cli(tmp_path, clean):
    config = ec.DistillConfig(finetune="none", clean_fraction=0.5, epochs=1, options={"warmup_epochs": 1})
    result = ec.distill(clean, TINY, config, device="cpu")
    assert result.report["student"] == "warmup" and result.report["finetune"] == "none"
    assert result.provenance.settings["defense"] == "distill"
    sha = result.save(tmp_path / "api.safetensors")
    payload = cli("distill", str(clean), "--data", TINY, "--finetune", "none", "--clean-fraction", "0.5",
                  "--epochs", "1", "-o", "warmup_epochs=1", "--out", str(tmp_path / "cli.safetensors"))
    assert payload["sha256"] == sha


def test_evaluate_gives_acc_and_asr_per_encoder_as_the_cli_does(clean):
    encoder = ec.load_encoder(clean).encoder
    result = ec.evaluate([clean, encoder], TINY, ec.EvalConfig(probe_epochs=5), device="cpu")
    assert isinstance(result, ec.EvalResult) and result.trigger == "white-square" and result.target_class == 0
    assert [row.source for row in result.encoders] == [str(clean), f"<{ARCH}>"]
    assert result.encoders[0].acc == result.encoders[1].acc  # the same weights, file or object
    payload = cli("evaluate", str(clean), "--data", TINY, "--probe-epochs", "5")
    assert payload["encoders"][0]["acc"] == result.as_dict()["encoders"][0]["acc"]
    assert payload["encoders"][0]["asr"] == result.as_dict()["encoders"][0]["asr"]


def test_objects_in_place_of_specs(clean):
    data = ec.load_data(TINY)
    trigger = ec.load_trigger("checkerboard:4", 32)
    result = ec.evaluate(clean, data, ec.EvalConfig(trigger=trigger, target_class=2, probe_epochs=3), device="cpu")
    assert result.trigger == "checkerboard:4" and result.target_class == 2 and result.data == TINY


def test_bad_input_is_a_user_error(clean):
    with pytest.raises(UserError, match="must be 0 or more"):
        ec.pretrain(TINY, ec.PretrainConfig(epochs=-1))
    with pytest.raises(UserError, match="unknown attack"):
        ec.poison(clean, TINY, ec.PoisonConfig(attack="nope"))
    with pytest.raises(UserError, match="format"):
        ec.save_encoder(ec.load_encoder(clean).encoder, "x.safetensors", format="onnx")


def test_scan_returns_a_verdict_with_the_trigger_it_found(clean):
    config = ec.ScanConfig(shadow_images=24, options={"steps": 3, "grid": 2, "batch_size": 4})
    result = ec.scan(clean, TINY, config, device="cpu")
    assert isinstance(result, ec.ScanResult) and result.verdict in ("backdoor", "clean")
    assert result.source == str(clean) and result.shadow_sample["size"] == 24
    assert result.mask.shape == (1, 32, 32) and result.pattern.shape == (3, 32, 32)
    assert result.margin == pytest.approx(result.score - result.threshold, abs=1e-5)
    assert result.row()["verdict"] == result.verdict and "mask" not in result.row()
    again = ec.scan(ec.load_encoder(clean).encoder, ec.load_data(TINY), config, device="cpu")
    assert again.score == result.score  # the same seed, from a file or from objects
