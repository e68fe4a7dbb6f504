"""Views of a checkpoint that rename foreign module layouts onto the native names of our architectures.

A view maps a flattened checkpoint (dotted names -> tensors) to {native name: (original name, tensor)},
so that what a network takes can be reported in the file's own names. Handled: torchvision ResNets kept
as an nn.Sequential of their children (the SimCLR/BadEncoder releases' `f.f.`, lightly's `backbone.`),
the ResNet of the SimCLR v2 TensorFlow-to-PyTorch converter (`net.S.blocks.B...`), and OpenCLIP's
image tower (`visual.`), renamed onto timm's VisionTransformer.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import torch

#: native name -> (original name, tensor)
View = dict[str, tuple[str, torch.Tensor]]


def identity(flat: Mapping[str, torch.Tensor]) -> View | None:
    return {k: (k, v) for k, v in flat.items()}


def _sequential_resnet(flat: Mapping[str, torch.Tensor]) -> View | None:
    """`P.N.<rest>` children of a torchvision ResNet in an nn.Sequential -> `P.conv1`, `P.layer1`, ...

    The SimCLR/BadEncoder releases keep them under `f.f.` (no max-pool), lightly under `backbone.`
    (max-pool and average pool included): the stages are the children holding `0.conv1.weight`.
    """
    view, changed = identity(flat), False
    roots = {m.group(1) for k in flat if (m := re.match(r"^(|.*\.)\d+\.0\.conv1\.weight$", k))}
    for root in sorted(roots):
        children: dict[int, dict[str, str]] = {}
        for key in flat:
            m = re.match(rf"^{re.escape(root)}(\d+)\.(.+)$", key)
            if m:
                children.setdefault(int(m.group(1)), {})[m.group(2)] = key
        stages = [i for i in sorted(children) if "0.conv1.weight" in children[i]]
        if len(stages) != 4:
            continue
        names = dict(zip(stages, ("layer1", "layer2", "layer3", "layer4")))
        for index, params in children.items():
            if index in names:
                continue
            weight = flat.get(params.get("weight", ""))
            if "running_mean" in params:
                names[index] = "bn1"
            elif weight is not None and weight.dim() == 4:
                names[index] = "conv1"
        if set(children) - set(names):
            continue  # a child we cannot place: not a ResNet's children
        for index, params in children.items():
            for rest, key in params.items():
                del view[key]
                view[f"{root}{names[index]}.{rest}"] = (key, flat[key])
        changed = True
    return view if changed else None


_SIMCLR_V2 = (  # the SimCLR v2 converter's ResNet (`net.S.blocks.B...`) -> torchvision names
    (r"net\.0\.0\.weight$", "conv1.weight"),
    (r"net\.0\.1\.0\.(\w+)$", r"bn1.\1"),
    (r"net\.([1-4])\.blocks\.(\d+)\.projection\.shortcut\.weight$", r"layer\1.\2.downsample.0.weight"),
    (r"net\.([1-4])\.blocks\.(\d+)\.projection\.bn\.0\.(\w+)$", r"layer\1.\2.downsample.1.\3"),
    (r"net\.([1-4])\.blocks\.(\d+)\.net\.([024])\.weight$", lambda m: f"layer{m[1]}.{m[2]}.conv{int(m[3]) // 2 + 1}.weight"),
    (r"net\.([1-4])\.blocks\.(\d+)\.net\.([135])\.0\.(\w+)$", lambda m: f"layer{m[1]}.{m[2]}.bn{int(m[3]) // 2 + 1}.{m[4]}"),
)

_OPENCLIP = (  # OpenCLIP's VisionTransformer (`visual.`) -> timm's VisionTransformer names
    (r"visual\.conv1\.weight$", "visual.patch_embed.proj.weight"),
    (r"visual\.class_embedding$", "visual.cls_token"),
    (r"visual\.positional_embedding$", "visual.pos_embed"),
    (r"visual\.ln_pre\.(\w+)$", r"visual.norm_pre.\1"),
    (r"visual\.ln_post\.(\w+)$", r"visual.norm.\1"),
    (r"visual\.proj$", "visual.proj"),
    (r"visual\.transformer\.resblocks\.(\d+)\.ln_([12])\.(\w+)$", r"visual.blocks.\1.norm\2.\3"),
    (r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(\w+)$", r"visual.blocks.\1.attn.qkv.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(\w+)$", r"visual.blocks.\1.attn.proj.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(\w+)$", r"visual.blocks.\1.mlp.fc1.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(\w+)$", r"visual.blocks.\1.mlp.fc2.\2"),
)
#: OpenCLIP keeps its class token and position table without timm's leading batch dimensions
_OPENCLIP_RESHAPE = {"cls_token": lambda t: t.reshape(1, 1, -1), "pos_embed": lambda t: t.unsqueeze(0)}


def _renamed(table, reshape: Mapping[str, Callable] | None = None) -> Callable[[Mapping[str, torch.Tensor]], View | None]:
    """A view that renames keys ending in a table pattern (whatever precedes it stays as the prefix)."""
    compiled = [(re.compile(rf"^(.*?){pattern}"), replacement) for pattern, replacement in table]

    def view(flat: Mapping[str, torch.Tensor]) -> View | None:
        out, changed = identity(flat), False
        for key, value in flat.items():
            for pattern, replacement in compiled:
                m = pattern.match(key)
                if not m:
                    continue
                tail = key[len(m.group(1)):]
                new = re.sub(pattern.pattern[len("^(.*?)"):], replacement, tail, count=1)
                reshaped = (reshape or {}).get(new.rsplit(".", 1)[-1])
                if reshaped is not None and value.dim() < 3:
                    value = reshaped(value)
                del out[key]
                out[m.group(1) + new] = (key, value)
                changed = True
                break
        return out if changed else None

    return view


#: name -> view; the first view is the file as it is
VIEWS: dict[str, Callable[[Mapping[str, torch.Tensor]], View | None]] = {
    "": identity,
    "Sequential ResNet": _sequential_resnet,
    "SimCLR v2 converter": _renamed(_SIMCLR_V2),
    "OpenCLIP": _renamed(_OPENCLIP, _OPENCLIP_RESHAPE),
}
