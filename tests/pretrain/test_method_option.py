"""The method is a setting wherever pre-training runs: `pretrain --method`, BASSL/CTRL's victim, the
fine-tuning defense and the warm-up student; checkpoints record it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from encoder_clean.attacks import AttackInputs, get_attack
from encoder_clean.cli import app
from encoder_clean.data.sampling import clean_subset
from encoder_clean.defenses import DefenseInputs
from encoder_clean.defenses.registry import run_defense
from encoder_clean.distill.students import StudentInputs, get_student
from encoder_clean.encoders.io import load_encoder
from encoder_clean.errors import UserError
from tests.cli.test_cli import ARCH, runner

CPU = torch.device("cpu")
TINY = "builtin?train=64&test=20"


@pytest.mark.parametrize("attack, trigger, method", [("bassl", "white-square:4", "byol"), ("ctrl", "ctrl", "mocov2")])
def test_data_poisoning_victims_run_the_method_given(attack, trigger, method, tiny_encoder, tiny_data):
    chosen = get_attack(attack)
    config = replace(chosen.preset("fast"), epochs=1, batch_size=32, method=method)
    targets = tiny_data.test.images[tiny_data.test.labels == 3]
    inputs = AttackInputs(tiny_encoder, tiny_data.train.images[:64], targets, trigger, 3, CPU, seed=0)
    outcome = chosen.run(inputs, config)
    assert outcome.stats["method"] == method and outcome.stats["steps"] == 2


def _defense_inputs(encoder, tiny_data):
    clean = clean_subset(tiny_data, 64 / len(tiny_data.train), seed=0).split
    return DefenseInputs(encoder, clean.images, clean.labels, tiny_data.num_classes, CPU, 0)


@pytest.mark.parametrize("method", ["mocov2", "byol"])
def test_finetune_runs_the_method_given(method, tiny_encoder, tiny_data):
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    config, outcome = run_defense("ft", _defense_inputs(tiny_encoder, tiny_data),
                                  ["epochs=1", "batch_size=32", f"method={method}"])
    assert config.method == method and outcome.stats["method"] == method
    assert any(not torch.equal(before[k], v) for k, v in tiny_encoder.state_dict().items() if k.endswith("weight"))


@pytest.mark.parametrize("options", [["method=swav"], ["method=byol", "temperature=0.3"], ["temperature=-1"]])
def test_finetune_refuses_a_bad_method_setting(options, tiny_encoder, tiny_data):
    with pytest.raises(UserError):
        run_defense("ft", _defense_inputs(tiny_encoder, tiny_data), ["epochs=1", *options])


def test_the_warmup_student_trains_with_the_method_given(tiny_encoder, tiny_data):
    def warm(method):
        inputs = StudentInputs(tiny_encoder, ARCH, tiny_data.train.images[:64], CPU, 0, 1, warmup_method=method)
        return get_student("warmup").build(inputs).state_dict()

    simclr, byol = warm("simclr"), warm("byol")
    assert any(not torch.equal(simclr[k], byol[k]) for k in simclr if k.endswith("weight"))
    with pytest.raises(UserError, match="unknown pre-training method"):
        warm("swav")


def test_pretrain_records_the_method_and_its_settings(tmp_path):
    out = tmp_path / "moco.safetensors"
    result = runner.invoke(app, ["pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "1", "--batch-size", "32",
                                 "--method", "mocov2", "-o", "queue_size=16", "--out", str(out), "--device", "cpu",
                                 "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "mocov2"
    loaded = load_encoder(str(out))
    assert loaded.setting("method") == "mocov2"
    assert loaded.setting("method_settings") == {"temperature": 0.2, "queue_size": 16, "momentum": 0.99,
                                                 "symmetric": False}
    assert "--method mocov2" in loaded.metadata["produced_by"]


@pytest.mark.parametrize("args, message", [(["--method", "swav"], "unknown pre-training method 'swav'"),
                                           (["--method", "byol", "-o", "queue_size=8"], "no option 'queue_size'"),
                                           (["-o", "temperature=hot"], "expected a number")])
def test_pretrain_refuses_a_bad_method_or_setting_with_one_line(args, message, tmp_path):
    out = tmp_path / "x.safetensors"
    result = runner.invoke(app, ["pretrain", "--data", TINY, "--arch", ARCH, "--epochs", "1", *args, "--out", str(out)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_list_methods_shows_each_with_its_published_settings():
    result = runner.invoke(app, ["list", "methods"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("simclr", "mocov2", "byol", "queue_size=4096", "momentum=0.99", "tau=0.996"):
        assert text in result.stdout
