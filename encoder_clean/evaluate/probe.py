"""Downstream probes trained on cached frozen features: a registry of probe kinds.

- `linear`: L2-regularised logistic regression on standardised features, fitted full-batch with L-BFGS
  (the cheap standard on cached features, as CLIP_benchmark and DINOv2 do; no learning rate to tune);
- `mlp`: the BadEncoder protocol's classifier, 512 -> 256 -> classes with ReLU and dropout 0.5, Adam
  lr 1e-4, batch 64 (the papers train 500 epochs; pass `epochs=500` for the full protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.errors import UserError
from encoder_clean.registry import Registry
from encoder_clean.runtime import NULL_PROGRESS, Progress, single_cpu_thread


class Standardize(nn.Module):
    """Fixed per-dimension standardisation with statistics of the training features."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", features.mean(dim=0, keepdim=True))
        self.register_buffer("std", features.std(dim=0, keepdim=True).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ProbeConfig:
    kind: str = "linear"
    epochs: int = 100  # L-BFGS iterations for full-batch probes
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    full_batch: bool = False


def _linear(features: torch.Tensor, num_classes: int) -> nn.Module:
    return nn.Sequential(Standardize(features), nn.Linear(features.shape[1], num_classes))


def _mlp(features: torch.Tensor, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features.shape[1], 512), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, num_classes),
    )


@dataclass(frozen=True)
class Probe:
    """A probe kind: how to build the classifier for features of a given width, and how to train it."""

    name: str
    build: Callable[[torch.Tensor, int], nn.Module]  # (training features, number of classes) -> classifier
    config: ProbeConfig


_PROBES: Registry[Probe] = Registry("probe", flag="--probe")


def register_probe(probe: Probe) -> Probe:
    return _PROBES.register(probe.name, probe)


def get_probe(name: str) -> Probe:
    return _PROBES.get(name)


def list_probes() -> dict[str, Probe]:
    return _PROBES.items()


register_probe(Probe("linear", _linear, ProbeConfig("linear", epochs=100, lr=1.0, weight_decay=1e-4, full_batch=True)))
register_probe(Probe("mlp", _mlp, ProbeConfig("mlp", epochs=100, batch_size=64, lr=1e-4, weight_decay=0.0)))


def probe_config(kind: str, epochs: int | None = None) -> ProbeConfig:
    config = get_probe(kind).config
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--probe-epochs {epochs}: must be at least 1")
        config = replace(config, epochs=epochs)
    return config


def train_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, config: ProbeConfig, *,
                seed: int, progress: Progress = NULL_PROGRESS) -> nn.Module:
    """Fit a probe of `config.kind` to (features, labels); both live on the same device."""
    torch.manual_seed(seed)
    probe = get_probe(config.kind).build(features, num_classes).to(features.device)
    if config.full_batch:
        return _fit_full_batch(probe, features, labels, config, progress)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    g = torch.Generator(device=features.device).manual_seed(seed)
    count = len(features)
    batch = min(config.batch_size, count)
    probe.train()
    # A 64-image step is too small to split between threads; on a busy CPU a second thread waiting for the
    # first made the steps many times slower (benchmarks/probe_speed.py), so the loop runs on one.
    with single_cpu_thread(features.device), progress.task(f"{config.kind} probe", total=config.epochs) as advance:
        for _ in range(config.epochs):
            order = torch.randperm(count, generator=g, device=features.device)
            for start in range(0, count, batch):
                index = order[start:start + batch]
                loss = F.cross_entropy(probe(features[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            advance(1)
    return probe.eval()


def regularised_loss(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                     weight_decay: float) -> torch.Tensor:
    """Cross entropy plus an L2 penalty on the probe's weight matrices (not its biases)."""
    penalty = sum((p ** 2).sum() for n, p in probe.named_parameters() if n.endswith("weight"))
    return F.cross_entropy(probe(features), labels) + weight_decay * penalty


def make_lbfgs(probe: nn.Module, config: ProbeConfig) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(probe.parameters(), lr=config.lr, max_iter=config.epochs, history_size=20,
                             line_search_fn="strong_wolfe")


def _fit_full_batch(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor, config: ProbeConfig,
                    progress: Progress) -> nn.Module:
    """Minimise the regularised loss with L-BFGS over all features at once."""
    optimizer = make_lbfgs(probe, config)

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = regularised_loss(probe, features, labels, config.weight_decay)
        loss.backward()
        return loss

    probe.train()
    with progress.task(f"{config.kind} probe", total=None):
        optimizer.step(closure)
    optimizer.zero_grad(set_to_none=True)
    return probe.eval()


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int,
                     weight_decay: float) -> nn.Module:
    """The `linear` probe fitted from zero weights: deterministic without a seed (MOTH's class probe)."""
    probe = _linear(features, num_classes).to(features.device)
    nn.init.zeros_(probe[1].weight)
    nn.init.zeros_(probe[1].bias)
    config = replace(get_probe("linear").config, epochs=steps, weight_decay=weight_decay)
    return _fit_full_batch(probe, features, labels, config, NULL_PROGRESS)


@torch.no_grad()
def predict(probe: nn.Module, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    probe.eval()
    return torch.cat([probe(features[i:i + batch_size]).argmax(dim=1)
                      for i in range(0, len(features), batch_size)])
