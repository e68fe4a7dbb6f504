"""Distillation-loss registry and the `NAME[=WEIGHT][@TAP,TAP...]` loss specs of `distill --loss`.

A loss kind compares one student tap with the same tap of the teacher. Taps are the encoder's named
layer taps (`layer1`..`layer4` for ResNets) or `features`, the pooled embedding (N, D). For every tap
the trainer builds one instance with `kind.build(student_channels, teacher_channels)`; instances are
`nn.Module`s so that losses needing a connector (a 1x1 convolution or linear map when the widths
differ) or learnable weights (AFD) train with the student. `forward(student, teacher)` returns a scalar;
the trainer passes the teacher's tensors detached, so gradients reach only the student (and the loss's
own parameters). Every loss is zero when the student's tensors equal the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from encoder_clean.errors import UserError
from encoder_clean.registry import Registry

FEATURES = "features"  # the tap name of the pooled embedding
STAGES = "stages"  # default-taps marker: every layer tap the encoder has
ATTENTION = "attention"  # default-taps marker: every attention tap (attn.N) of a transformer

Builder = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class LossKind:
    name: str
    description: str
    build: Builder  # (student_channels, teacher_channels) -> module(student, teacher) -> scalar
    default_weight: float  # the reference code's beta where it has one (the seed paper's, arXiv 2403.03846)
    default_taps: str | tuple[str, ...] = STAGES  # STAGES, or explicit tap names such as (FEATURES,)
    group: str = "other"  # attention | feature | relation | layer (the paper's grouping where it has one)


_LOSSES: Registry[LossKind] = Registry("distillation loss")


def register_loss(kind: LossKind) -> LossKind:
    return _LOSSES.register(kind.name, kind)


def get_loss(name: str) -> LossKind:
    return _LOSSES.get(name)


def list_losses() -> dict[str, LossKind]:
    return _LOSSES.items()


@dataclass(frozen=True)
class LossSpec:
    """One `--loss` entry: a kind, its weight, and the taps it applies to."""

    name: str
    weight: float
    taps: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}={self.weight:g}@{','.join(self.taps)}"


def parse_loss_spec(text: str, layer_taps: Sequence[str], attention_taps: Sequence[str] = ()) -> LossSpec:
    """`at`, `at=500`, `at@layer3,layer4`, `sp=2@features` -> LossSpec, with the kind's defaults filled in."""
    body, _, taps_text = text.strip().partition("@")
    name, sep, weight_text = body.partition("=")
    kind = get_loss(name.strip().lower())
    weight = kind.default_weight
    if sep:
        try:
            weight = float(weight_text)
        except ValueError:
            raise UserError(f"--loss {text!r}: weight {weight_text!r} is not a number") from None
        if not 0 <= weight < float("inf"):
            raise UserError(f"--loss {text!r}: the weight must be a finite number >= 0")
    if taps_text:
        taps = tuple(t.strip() for t in taps_text.split(",") if t.strip())
    elif kind.default_taps == STAGES:
        taps = tuple(layer_taps)
    elif kind.default_taps == ATTENTION:
        taps = tuple(attention_taps)
    else:
        taps = tuple(kind.default_taps)
    known = (*layer_taps, *attention_taps, FEATURES)
    unknown = [t for t in taps if t not in known]
    if unknown or not taps:
        raise UserError(f"--loss {text!r}: unknown tap(s) {', '.join(unknown) or '(none)'}; "
                        f"available: {', '.join(known)}")
    return LossSpec(kind.name, weight, taps)
