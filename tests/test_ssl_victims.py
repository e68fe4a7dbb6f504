"""benchmarks/ssl_victims.py: how it reads per-method settings and judges each row against issue 22's
targets, on made-up figures (the run itself takes CPU-hours)."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from tests.benchmarks import load_benchmark

@pytest.fixture(scope="module")
def victims():
    return load_benchmark("ssl_victims")


def test_per_method_values(victims):
    methods = ["simclr", "mocov2", "byol"]
    assert victims.per_method([], methods, "3") == {"simclr": "3", "mocov2": "3", "byol": "3"}
    assert victims.per_method(["5", "byol=9"], methods, "3") == {"simclr": "5", "mocov2": "5", "byol": "9"}


def test_method_options_and_run_tags(victims):
    settings = load_benchmark("method_settings")
    parser = argparse.ArgumentParser()
    options = settings.method_options(["byol:tau=0", "byol:predictor_lr=10"], ["simclr", "byol"], parser)
    assert options == {"simclr": [], "byol": ["tau=0", "predictor_lr=10"]}
    with pytest.raises(SystemExit):
        settings.method_options(["mocov2:tau=0"], ["simclr", "byol"], parser)
    # the tags of the cached victims stay as they were when no batch size is given
    assert settings.run_tag("byol", 12, None, ["tau=0.95", "predictor_lr=10"]) == "byol_e12_tau0.95_predictor_lr10"
    assert settings.run_tag("byol", 3, 32, ["tau=0"]) == "byol_e3_b32_tau0"


def test_a_method_run_keeps_pretrains_default_batch_unless_given(victims):
    settings = load_benchmark("method_settings")
    assert settings.batch_sizes(["byol=32"], ["simclr", "byol"]) == {"simclr": None, "byol": 32}
    default = settings.pretrain_config("simclr", 3, None, [])
    assert default.batch_size == victims.ec.PretrainConfig().batch_size
    given = settings.pretrain_config("byol", 3, 32, ["tau=0"], arch="resnet18-cifar-w16")
    assert (given.method, given.epochs, given.batch_size, given.options, given.arch) == (
        "byol", 3, 32, ("tau=0",), "resnet18-cifar-w16")
    assert settings.settings_of(32, ["tau=0"]) == ["batch 32", "tau=0"] and settings.settings_of(None, []) == []
    assert settings.warmup_steps(["byol=93"], ["simclr", "byol"]) == {"simclr": None, "byol": 93}
    assert settings.pretrain_config("byol", 3, 32, [], warmup_steps=93).warmup_steps == 93


def row(encoder: str, acc: float, nontarget: float, verdict: str) -> dict:
    return {"method": "m", "encoder": encoder, "acc": acc, "asr_nontarget": nontarget, "verdict": verdict}


def test_rows_are_judged_against_the_clean_victim_and_their_poisoned_encoder(victims):
    rows = [row("clean", 60.0, 2.0, "clean"), row("badencoder", 61.0, 99.0, "backdoor"),
            row("badencoder + distill", 59.5, 3.9, "clean"), row("drupe", 61.0, 97.0, "clean"),
            row("drupe + distill", 58.5, 4.5, "backdoor")]
    victims.judge(rows, "m")
    targets = [r["targets"] for r in rows]
    assert targets[:3] == ["met", "met", "met"]
    assert targets[3] == "scan wrong"
    assert targets[4] == "scan wrong; ASR-nt +2.50 over clean; ACC -2.50 under poisoned"


def test_each_distill_seed_is_judged_and_cached_under_the_recipe(victims, monkeypatch):
    names = [victims.distilled_name("drupe", seed) for seed in (0, 1)]
    assert names == ["drupe + distill", "drupe + distill (seed 1)"]
    rows = [row("clean", 60.0, 2.0, "clean"), row("drupe", 61.0, 97.0, "backdoor"),
            row(names[0], 60.0, 3.0, "clean"), row(names[1], 60.0, 4.5, "clean")]
    victims.judge(rows, "m")
    assert [r["targets"] for r in rows[2:]] == ["met", "ASR-nt +2.50 over clean"]
    before = victims.recipe_tag()
    monkeypatch.setattr(victims, "RECOMMENDED", victims.RECOMMENDED.__class__("ft", "warmup", ("at",)))
    assert victims.recipe_tag() != before  # a changed recipe is distilled again, not read from the cache


def test_rows_of_side_by_side_runs_are_published_together_without_measuring(victims, tmp_path, monkeypatch):
    parts = []
    for method in ("simclr", "byol"):
        part = tmp_path / f"{method}.json"
        part.write_text(json.dumps([dict(row("clean", 60.0, 2.0, "clean"), method=method, victim=method)]))
        parts.append(str(part))
    published = {}
    monkeypatch.setattr(victims, "measure", lambda *a: pytest.fail("measured instead of reading the rows"))
    monkeypatch.setattr(victims, "publish", lambda name, title, rows, *a, **k: published.update(name=name, rows=rows))
    monkeypatch.setattr(sys, "argv", ["ssl_victims.py", "--from-json", *parts, "--publish"])
    victims.main()
    assert published["name"] == "ssl-victims" and [r["method"] for r in published["rows"]] == ["simclr", "byol"]
