"""MOTH, model orthogonalization by class-distance hardening (Tao et al., IEEE S&P 2022), adapted to
self-supervised encoders.

MOTH enlarges the distance between classes: for a pair of classes (a -> b) it inverts a small trigger
that flips class-a inputs to class b, then trains the model on class-a inputs stamped with that trigger
under their *true* label a, so that no small patch can move a to b (a backdoor is such a patch).

An encoder has no classifier, so MOTH works through a linear probe on the defender's clean, labelled
subset: (a) fit a linear classifier on the frozen, L2-normalised features of the clean images;
(b) for each epoch, every class present in the labels is a source a, paired with one other class b
drawn at random; invert a trigger (mask = sigmoid, pattern = sigmoid, x' = (1 - mask) x + mask pattern)
with Adam on CE(probe(f(x')), b) + lambda * mean(mask); then harden encoder and probe together with
CE on the stamped images under their true label + CE on clean images + a feature-consistency term
(1 - cosine to the original encoder's features of the clean images) that keeps the embedding, and so
downstream accuracy, where it was. BatchNorm stays on its running statistics (eval mode) throughout.

The paper hardens for 2 epochs at lr 1e-4 over a full training set (thousands of steps); with a few
steps per pair in a CPU budget that learning rate moves nothing, so the default is 1e-3 (Adam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoder_clean.data.augment import to_float
from encoder_clean.defenses.registry import Defense, DefenseInputs, DefenseOutcome, register_defense
from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError
from encoder_clean.evaluate.features import embed as embed_features, embed_batches
from encoder_clean.evaluate.probe import fit_linear_probe
from encoder_clean.runtime import device_generator, fused, mode_kept, single_cpu_thread
from encoder_clean.training import EpochBatcher, run_steps

Tensor = torch.Tensor


@dataclass(frozen=True)
class MOTHConfig:
    epochs: int = 2  # every present class is hardened once as a source per epoch (Tao et al., IEEE S&P 2022: 2)
    lr: float = 1e-3  # Adam on encoder and probe (the paper: 1e-4 over thousands of steps)
    harden_steps: int = 5  # hardening steps per class pair
    batch_size: int = 64  # clean images per hardening step; also the most stamped images per step
    consistency_weight: float = 1.0  # weight of 1 - cos(f(x), f_original(x)) on the clean images
    inversion_steps: int = 30  # Adam steps of trigger inversion per pair
    inversion_lr: float = 0.1
    mask_lambda: float = 0.5  # weight of the mask size mean(mask) in the inversion loss
    mask_init_logit: float = -3.0  # the mask starts at sigmoid(-3) = 0.05 everywhere and grows where it helps
    probe_steps: int = 100  # L-BFGS iterations of the linear probe
    probe_weight_decay: float = 1e-3  # L2 on the probe weights: best held-out CE on shapes (measured)
    recheck_pairs: int = 3  # pairs re-inverted after hardening to report the mask size (0: skip)


@dataclass
class InvertedTrigger:
    """An inverted trigger: mask (1, 1, H, W) and pattern (1, 3, H, W), both in [0, 1]."""

    mask: Tensor
    pattern: Tensor

    def stamp(self, images: Tensor) -> Tensor:
        return (1 - self.mask) * images + self.mask * self.pattern

    def size(self) -> float:
        """L1 norm of the mask over the image area (DECREE's PL1-norm)."""
        return float(self.mask.sum()) / self.mask[0, 0].numel()


class Hardening:
    """The trigger of the pair being hardened and each pair's inversion figures (a resume restores them)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.trigger: InvertedTrigger | None = None
        self.inverted: list[dict[str, float]] = []

    def start_pair(self, trigger: InvertedTrigger, flip: float) -> None:
        self.trigger = trigger
        self.inverted.append({"size": trigger.size(), "flip": flip})

    def state_dict(self) -> dict[str, object]:
        trigger = self.trigger
        return {"mask": None if trigger is None else trigger.mask, "pattern": None if trigger is None else trigger.pattern,
                "inverted": self.inverted}

    def load_state_dict(self, state: dict[str, object]) -> None:
        mask, pattern = state["mask"], state["pattern"]
        self.trigger = None if mask is None else InvertedTrigger(mask.to(self.device), pattern.to(self.device))
        self.inverted = [dict(r) for r in state["inverted"]]


def check_config(config: MOTHConfig) -> None:
    for name in ("epochs", "harden_steps", "inversion_steps", "probe_steps"):
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.batch_size < 2:
        raise UserError(f"batch_size must be at least 2, got {config.batch_size}")
    for name in ("lr", "inversion_lr"):
        if getattr(config, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("consistency_weight", "mask_lambda", "probe_weight_decay"):
        if getattr(config, name) < 0:
            raise UserError(f"{name} must be at least 0, got {getattr(config, name)}")
    if config.recheck_pairs < 0:
        raise UserError(f"recheck_pairs must be at least 0, got {config.recheck_pairs}")


def check_labels(inputs: DefenseInputs) -> Tensor:
    """The present classes, after checking images and labels."""
    images, labels = inputs.clean_images, inputs.clean_labels
    if len(images) < 2:
        raise UserError(f"MOTH needs at least 2 clean images, got {len(images)}")
    if labels is None or labels.ndim != 1 or len(labels) != len(images):
        raise UserError("MOTH needs one label per clean image")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UserError("MOTH needs integer class labels")
    if int(labels.min()) < 0 or int(labels.max()) >= inputs.num_classes:
        raise UserError(f"clean labels must lie in 0..{inputs.num_classes - 1}")
    present = torch.unique(labels)
    if len(present) < 2:
        raise UserError(f"MOTH needs at least 2 classes in the clean labels, found {len(present)}")
    return present.cpu()


def embed(encoder: Encoder, images: Tensor, device: torch.device) -> Tensor:
    """L2-normalised backbone features of float images (channels_last, as the encoder is)."""
    return embed_features(encoder, images.contiguous(memory_format=torch.channels_last), device)


def fit_probe(features: Tensor, labels: Tensor, num_classes: int, config: MOTHConfig) -> nn.Module:
    """Logistic regression on standardised features, from zero weights (deterministic), with L-BFGS."""
    return fit_linear_probe(features, labels, num_classes, steps=config.probe_steps,
                            weight_decay=config.probe_weight_decay)


def invert_trigger(encoder: Encoder, probe: nn.Module, images: Tensor, target: int, config: MOTHConfig,
                   g: torch.Generator, device: torch.device) -> tuple[InvertedTrigger, float]:
    """A small trigger flipping float `images` to class `target` through encoder and probe.

    Returns the trigger and its flip rate (share of stamped images predicted as `target`). Gradients
    go to the trigger only: the encoder's and probe's `.grad` stay untouched."""
    size = images.shape[-1]
    mask_logit = (torch.randn(1, 1, size, size, generator=g, device=device) * 0.1
                  + config.mask_init_logit).requires_grad_(True)
    pattern_logit = torch.randn(1, 3, size, size, generator=g, device=device).requires_grad_(True)
    optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=config.inversion_lr)
    targets = torch.full((len(images),), target, device=device, dtype=torch.long)
    for _ in range(config.inversion_steps):
        mask = torch.sigmoid(mask_logit)
        stamped = (1 - mask) * images + mask * torch.sigmoid(pattern_logit)
        loss = F.cross_entropy(probe(embed(encoder, stamped, device)), targets) + config.mask_lambda * mask.mean()
        optimizer.zero_grad(set_to_none=True)
        mask_logit.grad, pattern_logit.grad = torch.autograd.grad(loss, [mask_logit, pattern_logit])
        optimizer.step()
    trigger = InvertedTrigger(torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach())
    with torch.no_grad():
        flipped = probe(embed(encoder, trigger.stamp(images), device)).argmax(dim=1) == target
    return trigger, float(flipped.float().mean())


def choose_pairs(present: Tensor, epochs: int, g: torch.Generator) -> list[tuple[int, int]]:
    """Per epoch, every present class as a source against one other present class drawn at random."""
    classes = present.tolist()
    pairs = []
    for _ in range(epochs):
        draws = torch.randint(len(classes) - 1, (len(classes),), generator=g, device=g.device).tolist()
        for source, draw in zip(classes, draws):
            others = [c for c in classes if c != source]
            pairs.append((source, others[draw]))
    return pairs


def _sample(indices: Tensor, count: int, g: torch.Generator) -> Tensor:
    if len(indices) <= count:
        return indices
    order = torch.randperm(len(indices), generator=g, device=g.device).to(indices.device)
    return indices[order[:count]]


def run_moth(inputs: DefenseInputs, config: MOTHConfig) -> DefenseOutcome:
    # With torch 2.15 on the CPU, two intra-op threads crash this loop's backward pass (SIGSEGV or heap
    # corruption, every run of `purify --method moth` on tiny data); one thread is stable. Not yet
    # traced to an op.
    with single_cpu_thread(inputs.device):
        return _run_moth(inputs, config)


def _run_moth(inputs: DefenseInputs, config: MOTHConfig) -> DefenseOutcome:
    check_config(config)
    present = check_labels(inputs)
    device, encoder = inputs.device, inputs.encoder.eval()  # BatchNorm frozen throughout
    images, labels = inputs.clean_images, inputs.clean_labels.to(device=device, dtype=torch.long)
    size = encoder.image_size
    g = device_generator(device, inputs.seed)
    original = embed_batches(encoder, images, device, channels_last=True)  # the consistency target, fixed
    probe = fit_probe(original, labels, inputs.num_classes, config)
    with torch.no_grad():
        probe_accuracy = float((probe(original).argmax(dim=1) == labels).float().mean())
    by_class = {c: torch.nonzero(labels == c).flatten() for c in present.tolist()}
    pairs = choose_pairs(present, config.epochs, g)

    parameters = [p for p in encoder.parameters()] + list(probe.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.lr, **fused(device))
    batches = iter(EpochBatcher(len(images), config.batch_size, g, device))
    hardening = Hardening(device)

    def step(index: int):
        pair, offset = divmod(index, config.harden_steps)
        source, target = pairs[pair]
        if offset == 0:  # a new pair: invert its trigger on the encoder as it is now
            chosen = _sample(by_class[source], config.batch_size, g)
            trigger, flip = invert_trigger(encoder, probe, to_float(images[chosen], size), target, config, g, device)
            hardening.start_pair(trigger, flip)
        trigger = hardening.trigger
        stamped = trigger.stamp(to_float(images[_sample(by_class[source], config.batch_size, g)], size))
        clean_index = next(batches)
        features = embed(encoder, torch.cat([stamped, to_float(images[clean_index], size)]), device)
        logits = probe(features)
        count = len(stamped)
        stamped_ce = F.cross_entropy(logits[:count], torch.full((count,), source, device=device, dtype=torch.long))
        clean_ce = F.cross_entropy(logits[count:], labels[clean_index])
        consistency = (1 - (features[count:] * original[clean_index]).sum(dim=1)).mean()
        loss = stamped_ce + clean_ce + config.consistency_weight * consistency
        return loss, {"stamped_ce": stamped_ce.detach(), "clean_ce": clean_ce.detach(),
                      "consistency": consistency.detach()}

    total = len(pairs) * config.harden_steps
    try:
        with mode_kept(encoder):  # the gradient flags go back as they were; the encoder ends in eval mode
            encoder.requires_grad_(True)
            history = run_steps(step, optimizer, total, progress=inputs.progress, description="MOTH hardening",
                                state={"encoder": encoder, "probe": probe, "generator": g, "batches": batches,
                                       "hardening": hardening}, log_every=config.harden_steps)
            recheck = []
            for source, target in pairs[:config.recheck_pairs]:
                chosen = _sample(by_class[source], config.batch_size, g)
                trigger, flip = invert_trigger(encoder, probe, to_float(images[chosen], size), target, config,
                                               g, device)
                recheck.append({"size": trigger.size(), "flip": flip})
    finally:
        encoder.zero_grad(set_to_none=True)
        encoder.eval()

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    final = {k: round(v, 4) for k, v in history[-1].items() if k != "step"}
    inverted = hardening.inverted
    checked = inverted[:len(recheck)]
    stats = {
        "steps": total, "pairs_hardened": len(pairs), "probe_train_accuracy": round(probe_accuracy, 4),
        # every pair's trigger as inverted just before that pair was hardened
        "inverted_mask_size": mean([r["size"] for r in inverted]),
        "inverted_flip_rate": mean([r["flip"] for r in inverted]),
        # the first `recheck_pairs` pairs inverted again after all the hardening
        "recheck_pairs": len(recheck),
        "recheck_mask_size_before": mean([r["size"] for r in checked]),
        "recheck_mask_size_after": mean([r["size"] for r in recheck]),
        "recheck_flip_rate_before": mean([r["flip"] for r in checked]),
        "recheck_flip_rate_after": mean([r["flip"] for r in recheck]),
        **{f"final_{k}": v for k, v in final.items()},
    }
    return DefenseOutcome(stats, {"moth_pairs": [list(p) for p in pairs]})


register_defense(Defense(
    "moth",
    "harden class pairs against inverted triggers through a probe on the clean labels (MOTH)",
    MOTHConfig(),
    run_moth,
))
