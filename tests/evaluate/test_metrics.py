"""Probe training and the ACC/ASR arithmetic."""

from __future__ import annotations

import pytest
import torch

from encoder_clean.errors import UserError
from encoder_clean.evaluate.metrics import attack_metrics, evaluate_encoder
from encoder_clean.evaluate.probe import predict, probe_config, train_probe
from encoder_clean.triggers import load_trigger


def test_attack_metrics_counts_all_and_non_target_images():
    labels = torch.tensor([0, 0, 1, 1, 2])
    clean = torch.tensor([0, 1, 1, 1, 2])
    triggered = torch.tensor([0, 0, 0, 1, 2])
    result = attack_metrics(clean, triggered, labels, target_class=0)
    assert result.acc == pytest.approx(80.0)
    assert result.asr == pytest.approx(60.0)
    assert result.asr_nontarget == pytest.approx(100 / 3)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_probes_learn_separable_features(kind):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 16, generator=g) * 0.3
    probe = train_probe(features, labels, 4, probe_config(kind, epochs=30), seed=0)
    assert (predict(probe, features) == labels).float().mean() > 0.95


def test_probe_options_are_checked():
    with pytest.raises(UserError, match="^--probe svm: unknown probe; known: linear, mlp$"):
        probe_config("svm")
    with pytest.raises(UserError):
        probe_config("linear", epochs=0)


def test_evaluate_encoder_runs_backbone_once_per_split(tiny_encoder, tiny_data, monkeypatch):
    calls = []
    original = tiny_encoder.features

    def counting(images):
        calls.append(len(images))
        return original(images)

    monkeypatch.setattr(tiny_encoder, "features", counting)
    result = evaluate_encoder(tiny_encoder, tiny_data, load_trigger("white-square", 32), 0,
                              probe_config("linear", epochs=20), device=torch.device("cpu"))
    assert sum(calls) == len(tiny_data.train) + 2 * len(tiny_data.test)
    assert 0 <= result.acc <= 100 and 0 <= result.asr <= 100 and 0 <= result.asr_nontarget <= 100
    with pytest.raises(UserError, match="target class"):
        evaluate_encoder(tiny_encoder, tiny_data, load_trigger("white-square", 32), 10,
                         probe_config("linear", epochs=1), device=torch.device("cpu"))
