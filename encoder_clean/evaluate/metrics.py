"""ACC and ASR of an encoder on a downstream dataset, with the frozen features computed once per split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from encoder_clean.data.dataset import Dataset
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.features import extract_features
from encoder_clean.evaluate.probe import ProbeConfig, predict, train_probe
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.triggers import Trigger


@dataclass
class EvalResult:
    acc: float  # clean test accuracy, %
    asr: float  # triggered test images classified as the target, % (all test images, as BadEncoder counts)
    asr_nontarget: float  # the same over test images whose true label is not the target, %

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def percent(hits: torch.Tensor) -> float:
    return 100.0 * float(hits.float().mean()) if hits.numel() else float("nan")


def attack_metrics(clean_pred: torch.Tensor, triggered_pred: torch.Tensor, labels: torch.Tensor,
                   target_class: int) -> EvalResult:
    to_target = triggered_pred == target_class
    return EvalResult(acc=percent(clean_pred == labels), asr=percent(to_target),
                      asr_nontarget=percent(to_target[labels != target_class]))


def evaluate_encoder(encoder: Encoder, data: Dataset, trigger: Trigger, target_class: int,
                     probe: ProbeConfig, *, device: torch.device, seed: int = 0,
                     progress: Progress = NULL_PROGRESS) -> EvalResult:
    """Train `probe` on clean training features, then measure ACC and ASR on the test split."""
    if not 0 <= target_class < data.num_classes:
        raise UserError(f"target class {target_class} is outside 0..{data.num_classes - 1} for {data.name}")
    train = extract_features(encoder, data.train.images, device=device, progress=progress,
                             description="features (train)")
    test = extract_features(encoder, data.test.images, device=device, progress=progress,
                            description="features (test)")
    triggered = extract_features(encoder, data.test.images, device=device, trigger=trigger,
                                 progress=progress, description="features (triggered test)")
    model = train_probe(train, data.train.labels.to(device), data.num_classes, probe, seed=seed,
                        progress=progress)
    labels = data.test.labels.to(device)
    return attack_metrics(predict(model, test), predict(model, triggered), labels, target_class)
