"""Map the state-dict layouts people actually hold onto our parameter names.

Handled: checkpoint dicts wrapping the weights (`state_dict`, `model`, ...), DataParallel `module.` and
torch.compile `_orig_mod.` prefixes, the Sequential backbones of the public SimCLR/BadEncoder/DRUPE/DECREE
releases (`f.f.N.` or `f.N.`, projection head under `g.`), `backbone.`/`encoder.` prefixes, torchvision's
own names (classifier `fc.` dropped), and our own files.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from encoder_clean.encoders.registry import get_arch
from encoder_clean.encoders.resnet import DEPTHS, STAGES
from encoder_clean.errors import UserError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "encoder_state_dict", "module")
STRIP_PREFIXES = ("module.", "_orig_mod.")
BACKBONE_PREFIXES = ("f.f.", "f.", "backbone.", "encoder.", "")
HEAD_PREFIXES = ("g.", "projector.", "projection_head.", "head.layers.", "head.")
DROPPED_PREFIXES = ("fc.", "classifier.", "linear.", "predictor.")


def unwrap_checkpoint(obj: object) -> dict[str, torch.Tensor]:
    """Find the flat name->tensor mapping inside whatever a checkpoint file held."""
    for _ in range(4):
        if isinstance(obj, Mapping) and not _has_tensors(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _has_tensors(obj):
        raise UserError("the file holds no state dict (no name -> tensor mapping found)")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _has_tensors(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def split_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return (backbone, head) state dicts in our naming; head keys are relative to `head.layers`."""
    state = {_strip(k): v for k, v in state.items()}
    head = {}
    for prefix in HEAD_PREFIXES:
        taken = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if taken and all(re.match(r"^\d+\.", k) for k in taken):
            head = taken
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}
    for prefix in BACKBONE_PREFIXES:
        taken = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not taken:
            continue
        if "0.weight" in taken:  # a Sequential backbone, as in the SimCLR releases
            return _rename_sequential(taken), head
        if "conv1.weight" in taken:
            return taken, head
    return dict(state), head


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _rename_sequential(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`N.<rest>` (children of a ResNet minus max-pool and fc) -> torchvision names."""
    by_index: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        if not index.isdigit():
            raise UserError(f"unrecognised key {key!r} in a Sequential backbone")
        by_index.setdefault(int(index), {})[rest] = value
    names: dict[int, str] = {}
    stages = [i for i in sorted(by_index) if any(re.match(r"^\d+\.conv1\.weight$", r) for r in by_index[i])]
    if len(stages) != len(STAGES):
        raise UserError(f"expected {len(STAGES)} residual stages in the Sequential backbone, found {len(stages)}")
    names.update({i: name for i, name in zip(stages, STAGES)})
    for index, params in by_index.items():
        if index in names:
            continue
        if "running_mean" in params:
            names[index] = "bn1"
        elif "weight" in params and params["weight"].dim() == 4:
            names[index] = "conv1"
        else:
            raise UserError(f"unrecognised module {index} in a Sequential backbone")
    return {f"{names[i]}.{rest}": v for i, params in by_index.items() for rest, v in params.items()}


def infer_resnet_arch(backbone: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the registered ResNet these weights fit, or None when they are no ResNet we know."""
    conv1 = backbone.get("conv1.weight")
    if conv1 is None or conv1.dim() != 4:
        return None
    width, kernel = int(conv1.shape[0]), int(conv1.shape[-1])
    counts = []
    for stage in STAGES:
        blocks = {int(m.group(1)) for k in backbone if (m := re.match(rf"^{stage}\.(\d+)\.", k))}
        counts.append(len(blocks))
    bottleneck = "layer1.0.conv3.weight" in backbone
    depth = next((d for d, (block, layout) in DEPTHS.items()
                  if tuple(counts) == layout and (block.expansion == 4) == bottleneck), None)
    if depth is None:
        return None
    name = f"resnet{depth}" + ("-cifar" if kernel == 3 else "") + (f"-w{width}" if width != 64 else "")
    try:
        get_arch(name)
    except UserError:
        return None
    return name
