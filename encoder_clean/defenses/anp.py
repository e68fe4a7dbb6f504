"""ANP, Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021), adapted to self-supervised encoders.

ANP learns a mask m in [0, 1] on every BatchNorm neuron while an adversary perturbs the same neurons
multiplicatively within [-eps, eps] (BN weight scaled by m + delta_w, bias by 1 + delta_b). Backdoor
neurons are the ones whose perturbation hurts most, so minimising
    alpha * L(masked) + (1 - alpha) * L(masked and perturbed)
drives their masks towards zero; the neurons with the smallest masks are then pruned.

Adapted to encoders, which have no labels or classifier: the task loss L is SimCLR's NT-Xent
(temperature 0.5) of the L2-normalised backbone features of two augmented views of clean images, with
BatchNorm on its running statistics. Masks and perturbations enter through `torch.func.functional_call`
as overridden BN weight/bias tensors, so no module changes during the optimisation.

Pruning a neuron zeroes its BN weight and bias, so that channel's output is exactly zero. How many to
prune is chosen on clean data only (never by attack success): candidates are the neurons whose mask is
below `threshold`, taken in ascending mask order, and the largest prefix is pruned whose *feature drift*
stays within `tolerance`. The drift is the mean of 1 - cos(f_pruned(x), f_original(x)) over a held-out
part of the clean images that the mask optimisation never saw (no augmentation). The prefix is found by
bisection, which assumes the drift grows with the prefix. The neuron with the largest mask of every BN
layer is never a candidate, so no layer is ever pruned away entirely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from encoder_clean.data.augment import augmentation, simclr_augment
from encoder_clean.defenses.registry import Defense, DefenseInputs, DefenseOutcome, register_defense
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.features import embed_batches
from encoder_clean.pretrain import nt_xent
from encoder_clean.runtime import NULL_PROGRESS, Progress, autocast, device_generator, fused, mode_kept
from encoder_clean.training import EpochBatcher, run_steps

Tensor = torch.Tensor


@dataclass(frozen=True)
class ANPConfig:
    steps: int = 100  # mask optimisation steps (the paper: 2000; sized for about a minute on a CPU)
    batch_size: int = 64  # images per step (two views each)
    eps: float = 0.4  # perturbation budget (Wu & Wang, NeurIPS 2021)
    alpha: float = 0.2  # weight of the unperturbed loss (Wu & Wang, NeurIPS 2021)
    # Mask SGD learning rate, momentum 0.9. The paper's 0.2 is for 2000 steps: in 100 steps it leaves
    # every mask above 0.79 (measured), so nothing is pruned; 2.0 lets the masks travel about as far as
    # 1000 steps at 0.2 would. Set lr=0.2 with steps=2000 for the published recipe.
    lr: float = 2.0
    temperature: float = 0.5
    augment: str = "strong"  # augmentation preset of the two views
    threshold: float = 0.2  # neurons with a mask below it are pruning candidates
    # Largest mean 1 - cos(pruned, original features) allowed on the held-out clean images. Measured on a
    # CPU-scale ResNet-18: prunings with a drift up to 0.06 cost at most 1.7 points of probe accuracy.
    tolerance: float = 0.05
    holdout_fraction: float = 0.2  # clean images kept for the pruning criterion only


@dataclass
class BatchNormNeurons:
    """The BatchNorm2d layers of an encoder, their channels laid end to end in one flat vector."""

    names: list[str]
    layers: list[nn.BatchNorm2d]

    @classmethod
    def of(cls, encoder: nn.Module) -> "BatchNormNeurons":
        found = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
        if not found:
            raise UserError("ANP needs an encoder with BatchNorm2d layers; this one has none")
        return cls([n for n, _ in found], [m for _, m in found])

    @property
    def sizes(self) -> list[int]:
        return [layer.num_features for layer in self.layers]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def layer_of(self) -> Tensor:
        """The layer index of every flat neuron."""
        return torch.repeat_interleave(torch.arange(len(self.layers)), torch.tensor(self.sizes))

    def overrides(self, weight_scale: Tensor, bias_scale: Tensor | None = None) -> dict[str, Tensor]:
        """BN weight and bias tensors scaled per neuron by the flat vectors given (bias: unscaled if None)."""
        out: dict[str, Tensor] = {}
        weights = weight_scale.split(self.sizes)
        biases = bias_scale.split(self.sizes) if bias_scale is not None else [None] * len(self.layers)
        for name, layer, w, b in zip(self.names, self.layers, weights, biases):
            out[f"{name}.weight"] = layer.weight.detach() * w.to(layer.weight.dtype)
            out[f"{name}.bias"] = layer.bias.detach() if b is None else layer.bias.detach() * b.to(layer.bias.dtype)
        return out


def zero_batchnorm_channels(module: nn.BatchNorm2d, channels: Iterable[int] | Tensor) -> None:
    """Prune `channels` of `module` in place: weight and bias set to exactly 0, so they output 0."""
    if not isinstance(module, nn.BatchNorm2d) or module.weight is None or module.bias is None:
        raise ValueError("zero_batchnorm_channels needs an affine nn.BatchNorm2d")
    index = torch.as_tensor(list(channels) if not isinstance(channels, Tensor) else channels,
                            dtype=torch.long).flatten()
    if index.numel() == 0:
        return
    if int(index.min()) < 0 or int(index.max()) >= module.num_features:
        raise ValueError(f"channel index outside 0..{module.num_features - 1}")
    index = index.to(module.weight.device)
    with torch.no_grad():
        module.weight[index] = 0.0
        module.bias[index] = 0.0


def check_config(config: ANPConfig) -> None:
    if config.steps < 1:
        raise UserError(f"steps must be at least 1, got {config.steps}")
    if config.batch_size < 2:
        raise UserError(f"batch_size must be at least 2, got {config.batch_size}")
    if not 0 <= config.eps <= 1:
        raise UserError(f"eps must be in [0, 1], got {config.eps}")
    if not 0 <= config.alpha <= 1:
        raise UserError(f"alpha must be in [0, 1], got {config.alpha}")
    if config.lr <= 0:
        raise UserError(f"lr must be positive, got {config.lr}")
    if config.temperature <= 0:
        raise UserError(f"temperature must be positive, got {config.temperature}")
    if not 0 <= config.threshold <= 1:
        raise UserError(f"threshold must be in [0, 1], got {config.threshold}")
    if config.tolerance < 0:
        raise UserError(f"tolerance must be at least 0, got {config.tolerance}")
    if not 0 <= config.holdout_fraction < 1:
        raise UserError(f"holdout_fraction must be in [0, 1), got {config.holdout_fraction}")
    augmentation(config.augment)


def optimize_masks(encoder: Encoder, images: Tensor, config: ANPConfig, g: torch.Generator,
                   device: torch.device, *, progress: Progress = NULL_PROGRESS,
                   observe: Callable[[Tensor], None] | None = None) -> tuple[Tensor, list[dict[str, float]]]:
    """ANP's mask optimisation on uint8 `images`; returns the flat masks (see `BatchNormNeurons`) and
    the logged losses. The encoder is left unchanged; `observe(masks)` sees the masks after every step."""
    neurons = BatchNormNeurons.of(encoder)
    size, augment, eps = encoder.image_size, augmentation(config.augment), config.eps
    masks = torch.ones(neurons.total, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([masks], lr=config.lr, momentum=0.9, **fused(device))
    batches = iter(EpochBatcher(len(images), config.batch_size, g, device))
    ones = torch.ones(neurons.total, device=device)

    def task_loss(overrides: dict[str, Tensor], views: Tensor) -> Tensor:
        with autocast(device):
            z = functional_call(encoder, overrides, (views,))
        half = views.shape[0] // 2
        return nt_xent(z[:half], z[half:], config.temperature)

    def step(_: int):
        batch = images[next(batches)]
        views = torch.cat([simclr_augment(batch, size, g, augment), simclr_augment(batch, size, g, augment)])
        views = views.contiguous(memory_format=torch.channels_last)
        natural = task_loss(neurons.overrides(masks), views)
        if eps == 0:
            return natural, {"natural": natural.detach()}
        # The adversary: random start in [-eps, eps], one signed-gradient ascent step of size eps.
        noise = ((torch.rand(2, neurons.total, generator=g, device=device) * 2 - 1) * eps).requires_grad_(True)
        adversarial = task_loss(neurons.overrides(masks.detach() + noise[0], ones + noise[1]), views)
        (grad,) = torch.autograd.grad(adversarial, [noise])
        noise = (noise.detach() + eps * grad.sign()).clamp_(-eps, eps)
        robust = task_loss(neurons.overrides(masks + noise[0], ones + noise[1]), views)
        loss = config.alpha * natural + (1 - config.alpha) * robust
        return loss, {"natural": natural.detach(), "robust": robust.detach()}

    def clip() -> None:
        with torch.no_grad():
            masks.clamp_(0.0, 1.0)
        if observe is not None:
            observe(masks.detach())

    with mode_kept(encoder):
        encoder.eval()  # BatchNorm on its running statistics
        encoder.requires_grad_(False)  # gradients flow to the masks only
        history = run_steps(step, optimizer, config.steps, progress=progress, description="ANP masks",
                            state={"masks": masks, "generator": g, "batches": batches}, after_step=clip)
    return masks.detach(), history


def _features(encoder: Encoder, images: Tensor, device: torch.device,
              overrides: dict[str, Tensor] | None = None) -> Tensor:
    forward = (lambda x: functional_call(encoder, overrides, (x,))) if overrides else None
    return embed_batches(encoder, images, device, forward=forward)


def pruning_candidates(neurons: BatchNormNeurons, masks: Tensor, threshold: float) -> Tensor:
    """Flat indices of the neurons with a mask below `threshold`, ascending by mask (ties by index),
    leaving out the largest-mask neuron of each layer so that no layer is pruned away entirely."""
    masks = masks.detach().cpu()
    keep = torch.zeros(neurons.total, dtype=torch.bool)
    start = 0
    for size in neurons.sizes:
        keep[start + int(torch.argmax(masks[start:start + size]))] = True
        start += size
    order = torch.sort(masks, stable=True).indices
    return order[(masks[order] < threshold) & ~keep[order]]


def select_pruning(encoder: Encoder, neurons: BatchNormNeurons, candidates: Tensor, holdout: Tensor,
                   tolerance: float, device: torch.device) -> tuple[int, float, float]:
    """The largest prefix of `candidates` whose feature drift on `holdout` is within `tolerance`.

    Returns (count, drift at count, drift with every candidate pruned)."""
    if len(candidates) == 0:
        return 0, 0.0, 0.0
    reference = _features(encoder, holdout, device)
    candidates = candidates.to(device)

    def drift(count: int) -> float:
        if count == 0:
            return 0.0
        keep = torch.ones(neurons.total, device=device)
        keep[candidates[:count]] = 0.0
        pruned = _features(encoder, holdout, device, neurons.overrides(keep, keep))
        return max(0.0, float((1 - (pruned * reference).sum(dim=1)).mean()))

    full = drift(len(candidates))
    if full <= tolerance:
        return len(candidates), full, full
    good, good_drift, bad = 0, 0.0, len(candidates)  # drift(good) <= tolerance < drift(bad)
    while bad - good > 1:
        middle = (good + bad) // 2
        value = drift(middle)
        if value <= tolerance:
            good, good_drift = middle, value
        else:
            bad = middle
    return good, good_drift, full


def mask_summary(masks: Tensor, threshold: float) -> dict[str, object]:
    masks = masks.detach().float().cpu()
    return {
        "min": round(float(masks.min()), 4), "mean": round(float(masks.mean()), 4),
        "median": round(float(masks.median()), 4), "max": round(float(masks.max()), 4),
        "below_threshold": int((masks < threshold).sum()),
        "histogram_0_to_1_in_tenths": [int(c) for c in torch.histc(masks, bins=10, min=0.0, max=1.0)],
    }


def split_holdout(count: int, fraction: float, g: torch.Generator, device: torch.device
                  ) -> tuple[Tensor, Tensor]:
    """(optimisation indices, held-out indices); with too few images both use all of them."""
    order = torch.randperm(count, generator=g, device=g.device).to(device)
    held = int(round(fraction * count))
    if held < 1 or count - held < 2:
        return order, order
    return order[held:], order[:held]


def prune(neurons: BatchNormNeurons, flat: Sequence[int]) -> dict[str, list[int]]:
    """Zero the given flat neurons; returns {layer name: sorted channels pruned}."""
    layer_of = neurons.layer_of()
    starts = torch.tensor([0] + neurons.sizes).cumsum(0)
    pruned: dict[str, list[int]] = {}
    for index in flat:
        layer = int(layer_of[index])
        pruned.setdefault(neurons.names[layer], []).append(int(index - starts[layer]))
    ordered: dict[str, list[int]] = {}  # in layer order
    for name, layer in zip(neurons.names, neurons.layers):
        if name in pruned:
            ordered[name] = sorted(pruned[name])
            zero_batchnorm_channels(layer, ordered[name])
    return ordered


def run_anp(inputs: DefenseInputs, config: ANPConfig) -> DefenseOutcome:
    check_config(config)
    images = inputs.clean_images
    if len(images) < 2:
        raise UserError(f"ANP needs at least 2 clean images, got {len(images)}")
    encoder = inputs.encoder.eval()
    neurons = BatchNormNeurons.of(encoder)
    g = device_generator(inputs.device, inputs.seed)
    train, held = split_holdout(len(images), config.holdout_fraction, g, inputs.device)
    masks, history = optimize_masks(encoder, images[train], config, g, inputs.device, progress=inputs.progress)
    candidates = pruning_candidates(neurons, masks, config.threshold)
    count, drift, full_drift = select_pruning(encoder, neurons, candidates, images[held], config.tolerance,
                                              inputs.device)
    pruned = prune(neurons, candidates[:count].tolist())
    final = {k: round(v, 4) for k, v in history[-1].items() if k != "step"} if history else {}
    stats = {
        "steps": config.steps, **{f"final_{k}": v for k, v in final.items()},
        "neurons": neurons.total, "candidates": len(candidates), "pruned": count,
        "pruned_per_layer": {name: len(channels) for name, channels in pruned.items()},
        "feature_drift": round(drift, 6), "feature_drift_all_candidates": round(full_drift, 6),
        "holdout_images": len(held), "masks": mask_summary(masks, config.threshold),
    }
    return DefenseOutcome(stats, {"pruned_batchnorm_channels": pruned})


register_defense(Defense(
    "anp",
    "learn BatchNorm neuron masks under adversarial neuron perturbation, prune the low ones (ANP)",
    ANPConfig(),
    run_anp,
))
