"""Find the backbone inside any checkpoint, whatever its nesting and prefix.

A checkpoint is flattened to dotted names (`state_dict.module.encoder_q.conv1.weight`), seen through a
few *views* that rename foreign module layouts onto native names (the Sequential ResNets of the SimCLR
and lightly code, the SimCLR v2 converter's ResNet, OpenCLIP's image tower), and searched for every
architecture the registry knows: a network is a prefix under which every parameter of an architecture
sits with the right shape. ViTs in timm's naming (DINO, MoCo v3) are recognised from their shapes too.

Where a file holds several networks, `PREFERENCES` says which one an evaluation takes (MoCo's query
encoder, MoCo v3's base encoder, DINO's teacher, BYOL's online network); copies with equal weights
count once; anything else is ambiguous and the user picks one with `--prefix`. Everything not taken
(heads, predictors, prototypes, classifiers, optimiser state, the other network) is dropped and listed.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from encoder_clean.encoders.base import Encoder, ProjectionHead
from encoder_clean.encoders.legacy import VIEWS, identity
from encoder_clean.encoders.registry import create_encoder, list_archs
from encoder_clean.encoders.wrapped import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, TimmEncoder, require
from encoder_clean.errors import UserError

MAX_DEPTH = 32  # a pickled module nests two levels per submodule
#: the parts of a pickled nn.Module's state that hold its tensors and submodules
MODULE_STATE = ("_parameters", "_buffers", "_modules")
#: BatchNorm's step counter: absent from older files, and not a weight
OPTIONAL_SUFFIX = "num_batches_tracked"
#: wrapper levels that say nothing about which network a tensor belongs to (left out of reports)
WRAPPERS = {"state_dict", "model", "module", "_orig_mod", "net", "model_state_dict", "resnet"}


# ------------------------------------------------------------------------------ flattening
def flatten(obj: object) -> dict[str, torch.Tensor]:
    """Every tensor in nested mappings, by its dotted path (lists and other values are skipped).

    A module pickled whole (`torch.save(model)`, read as inert objects by `encoders/pickles.py`) is walked
    through its state: `_parameters`, `_buffers` and `_modules` add no path component, so its tensors get
    the names its state dict would give them."""
    found: dict[str, torch.Tensor] = {}

    def walk(node: Mapping, path: str, depth: int) -> None:
        for key, value in node.items():
            name = path if key in MODULE_STATE else f"{path}{key}."
            state = getattr(value, "pickled_state", None)
            if isinstance(value, torch.Tensor):
                found[name[:-1]] = value.detach()  # a pickled module's parameters come back requiring grad
            elif depth >= MAX_DEPTH:
                continue
            elif isinstance(value, Mapping):
                walk(value, name, depth + 1)
            elif isinstance(state, Mapping):
                walk(state, name, depth + 1)

    state = getattr(obj, "pickled_state", None)
    if isinstance(obj, Mapping) or isinstance(state, Mapping):
        walk(obj if isinstance(obj, Mapping) else state, "", 0)
    return found


# ------------------------------------------------------------------------------ architectures
@dataclass(frozen=True)
class Template:
    """What an architecture's state dict holds, in its native names, and how to build it."""

    arch: str
    shapes: dict[str, tuple[int, ...]]
    build: Callable[[], Encoder]
    feature_dim: int
    guess: str = ""  # what the file could not say and was assumed


def native(encoder: Encoder) -> nn.Module:
    """The module whose state-dict names files use: a wrapped library model, or our ResNet itself."""
    model = getattr(encoder, "model", None)
    return model if isinstance(model, nn.Module) else encoder


def template_of(encoder_factory: Callable[[], Encoder], arch: str, guess: str = "") -> Template:
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        encoder = encoder_factory()
        shapes = {k: tuple(v.shape) for k, v in native(encoder).state_dict().items()}
    return Template(arch, shapes, encoder_factory, int(encoder.feature_dim), guess)


@functools.lru_cache(maxsize=None)
def registered_templates() -> tuple[Template, ...]:
    return tuple(template_of(functools.partial(create_encoder, info.name, head=False), info.name)
                 for info in list_archs())


def vit_templates(view: Mapping[str, tuple[str, torch.Tensor]]) -> list[Template]:
    """timm VisionTransformers sized from the shapes under each prefix that holds a ViT (class token,
    position table, patch embedding, blocks): DINO's and MoCo v3's ViTs use timm's names, and OpenCLIP's
    image tower is renamed onto them (see VIEWS)."""
    templates = []
    for key in view:
        if key.endswith("patch_embed.proj.weight"):
            template = _vit_template(view, key[: -len("patch_embed.proj.weight")])
            if template is not None:
                templates.append(template)
    return templates


def _vit_template(view: Mapping[str, tuple[str, torch.Tensor]], prefix: str) -> Template | None:
    def shape(name: str) -> tuple[int, ...]:
        return tuple(view[prefix + name][1].shape) if prefix + name in view else ()

    patch, pos, fc1 = shape("patch_embed.proj.weight"), shape("pos_embed"), shape("blocks.0.mlp.fc1.weight")
    depth = len({m.group(1) for k in view if (m := re.match(rf"^{re.escape(prefix)}blocks\.(\d+)\.", k))})
    if len(patch) != 4 or len(pos) != 3 or not shape("cls_token") or len(fc1) != 2 or not depth:
        return None
    width, size, grid = patch[0], patch[-1], round(max(pos[1] - 1, 0) ** 0.5)
    if width < 1 or size < 1 or grid < 1 or grid * grid != pos[1] - 1:
        return None
    heads = width // 64 if width % 64 == 0 else 1  # the ViT convention (64 channels a head): weights cannot say
    clip = bool(shape("norm_pre.weight"))  # CLIP's towers normalise the tokens before the blocks
    args = {"img_size": grid * size, "patch_size": size, "depth": depth, "embed_dim": width, "num_heads": heads,
            "mlp_ratio": fc1[0] / width, "qkv_bias": prefix + "blocks.0.attn.qkv.bias" in view}
    name = "vit_base_patch32_clip_224" if clip else "vit_base_patch16_224"
    mean, std = (CLIP_MEAN, CLIP_STD) if clip else (IMAGENET_MEAN, IMAGENET_STD)
    config = {"architecture": name, "model_args": args,
              "pretrained_cfg": {"input_size": [3, grid * size, grid * size], "mean": list(mean), "std": list(std),
                                 "classifier": "head"}}
    guess = f"{heads} attention head{'s' * (heads != 1)} (64 channels each)"
    if clip:
        guess += " and GELU (OpenAI's CLIP uses QuickGELU: --arch timm/vit_base_patch16_clip_quickgelu_224 or the like)"
    else:
        guess += " (else name the model, e.g. --arch 'timm/vit_small_patch16_224?num_heads=12')"
    return _wrapped_template(config, guess)


def _wrapped_template(config: dict, guess: str = "") -> Template | None:
    try:
        return template_of(functools.partial(TimmEncoder.from_config, config), f"timm/{config['architecture']}",
                           guess)
    except UserError:
        return None


def timm_template(spec: str) -> Template:
    """A timm architecture named by the user: `--arch timm/NAME[?ARG=VALUE&...]`, with timm's preprocessing
    for NAME; the arguments override the model's (what weights cannot say, e.g. `num_heads=12` for MoCo
    v3's ViT-S, or `img_size=32`)."""
    timm = require("timm", "timm")
    name, _, query = spec.partition("?")
    args = {}
    for item in filter(None, query.split("&")):
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--arch timm/{spec}: expected timm/NAME?ARG=VALUE&..., not {item!r}")
        try:
            args[key] = json.loads(text)
        except ValueError:
            args[key] = text
    cfg = timm.models.get_pretrained_cfg(name)
    pretrained = cfg.to_dict() if cfg is not None else {}
    pretrained = {key: pretrained[key] for key in ("input_size", "mean", "std", "classifier") if key in pretrained}
    if "img_size" in args and isinstance(args["img_size"], int):
        pretrained["input_size"] = [3, args["img_size"], args["img_size"]]
    config = {"architecture": name, "model_args": args, "pretrained_cfg": pretrained}
    return template_of(functools.partial(TimmEncoder.from_config, config), f"timm/{name}")


# ------------------------------------------------------------------------------ matching
@dataclass
class Network:
    """One backbone found in the file."""

    prefix: str
    template: Template
    view: str
    state: dict[str, torch.Tensor]  # native names
    consumed: set[str]  # original keys it takes

    @property
    def label(self) -> str:
        return self.prefix.rstrip(".") or "(top level)"


def match(view: Mapping[str, tuple[str, torch.Tensor]], template: Template) -> list[tuple[str, int]]:
    """Prefixes under which every parameter of `template` sits with its shape, with how many it covers."""
    required = [k for k in template.shapes if not k.endswith(OPTIONAL_SUFFIX)]
    if not required:
        return []
    anchor = required[0]
    prefixes = {k[: -len(anchor)] for k in view if k.endswith(anchor) and (k == anchor or k[-len(anchor) - 1] == ".")}
    found = []
    for prefix in prefixes:
        if all(prefix + k in view and tuple(view[prefix + k][1].shape) == template.shapes[k] for k in required):
            found.append((prefix, len(required)))
    return found


def find_networks(flat: Mapping[str, torch.Tensor], templates: Iterable[Template] | None = None) -> list[Network]:
    """Every (prefix, architecture) that fits; at one prefix the architecture covering most tensors wins
    (a ResNet-18's names and shapes are all inside a ResNet-34's)."""
    best: dict[str, tuple[int, Network]] = {}
    for view_name, make in VIEWS.items():
        view = make(flat)
        if view is None:
            continue
        candidates = list(templates) if templates is not None else [*registered_templates(), *vit_templates(view)]
        for template in candidates:
            for prefix, covered in match(view, template):
                if prefix in best and best[prefix][0] >= covered:
                    continue
                state = {k: view[prefix + k][1] for k in template.shapes if prefix + k in view}
                consumed = {view[prefix + k][0] for k in template.shapes if prefix + k in view}
                best[prefix] = (covered, Network(prefix, template, view_name, state, consumed))
    return [network for _, network in best.values()]


# ------------------------------------------------------------------------------ choosing
#: (rule, preferred, passed over): patterns on one component of the prefix, in the order they apply
PREFERENCES: tuple[tuple[str, str, str], ...] = (
    ("query over key", r"encoder_q|q_encoder|query(_encoder)?", r"encoder_k|k_encoder|key(_encoder)?"),
    ("base over momentum", r"(?!.*momentum).*", r".*momentum.*|.*_ema|ema_.*"),
    ("teacher over student", r"teacher.*", r"student.*"),
    ("online over target", r"online.*", r"target.*"),
)


def _components(prefix: str) -> list[str]:
    return [c for c in prefix.rstrip(".").split(".") if c and c not in WRAPPERS] or [""]


def beats(winner: str, loser: str) -> str | None:
    """The rule by which the network at prefix `winner` is preferred over the one at `loser`, if any:
    a component of `winner` fits a rule's preferred pattern where one of `loser` fits its passed-over one."""
    a, b = _components(winner), _components(loser)
    for rule, preferred, passed in PREFERENCES:
        if any(x != y and re.fullmatch(preferred, x) and re.fullmatch(passed, y) for x in a for y in b):
            return rule
    return None


def _same_weights(a: Network, b: Network) -> bool:
    return a.template.arch == b.template.arch and all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def choose(networks: list[Network], prefix: str | None, source: str) -> tuple[Network, list[Network], str | None]:
    """(the network taken, the others, the rule that chose it or None)."""
    if prefix is not None:
        wanted = prefix if prefix.endswith(".") or not prefix else prefix + "."
        fits = [n for n in networks if n.prefix == wanted] or [n for n in networks if n.prefix.endswith("." + wanted)]
        if len(fits) != 1:
            listing = ", ".join(n.label for n in networks)
            raise UserError(f"{source}: --prefix {prefix} names {'more than one' if fits else 'no'} network in the "
                            f"file (found: {listing})")
        return fits[0], [n for n in networks if n is not fits[0]], "--prefix"
    # Copies with equal weights are one network (byol-pytorch's `net` is also `online_encoder.net`;
    # a momentum copy before its first update); each group keeps all its prefixes for the rules.
    groups: list[list[Network]] = []
    for network in sorted(networks, key=lambda n: (len(n.prefix), n.prefix)):
        group = next((g for g in groups if _same_weights(network, g[0])), None)
        if group is None:
            groups.append([network])
        else:
            group.append(network)

    def rule_between(x: list[Network], y: list[Network]) -> str | None:
        return next((r for a in x for b in y if (r := beats(a.prefix, b.prefix))), None)

    standing = [g for g in groups if not any(rule_between(o, g) for o in groups if o is not g)]
    if len(groups) == 1 or len(standing) == 1:
        taken = (groups if len(groups) == 1 else standing)[0]
        rule = next((r for g in groups if g is not taken and (r := rule_between(taken, g))), None)
        return taken[0], [n for n in networks if n is not taken[0]], rule
    listing = ", ".join(f"{g[0].label} ({g[0].template.arch})" for g in (standing or groups))
    raise UserError(f"{source}: the file holds {len(standing or groups)} networks and no rule picks one: {listing}; "
                    f"choose one with --prefix NAME")


# ------------------------------------------------------------------------------ the result
@dataclass
class Layout:
    """What was taken from a checkpoint and what was left."""

    network: Network
    others: list[Network]
    rule: str | None
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # a SimCLR head kept, relative to head.layers
    head_prefix: str = ""
    dropped: dict[str, int] = field(default_factory=dict)  # group -> tensors

    @property
    def arch(self) -> str:
        return self.network.template.arch

    def describe(self) -> str:
        """One line: which network, how it was told apart, what was dropped."""
        parts = [f"took {self.network.label} as {self.arch}"]
        if self.network.view:
            parts[-1] += f" ({self.network.view} layout)"
        if self.rule and self.others:
            parts[-1] += f" over {', '.join(o.label for o in self.others)} ({self.rule})"
        if self.network.template.guess:
            parts.append(f"assumed {self.network.template.guess}")
        if self.head:
            parts.append(f"kept the projection head {self.head_prefix.rstrip('.')}")
        if self.dropped:
            total = sum(self.dropped.values())
            groups = ", ".join(list(self.dropped)[:8]) + (", ..." if len(self.dropped) > 8 else "")
            parts.append(f"dropped {total} tensor{'s' * (total != 1)} ({groups})")
        return "; ".join(parts)


def find_backbone(obj: object, source: str, *, templates: Iterable[Template] | None = None,
                  prefix: str | None = None) -> Layout:
    """The backbone a checkpoint holds (see the module docstring); UserError when none or several fit."""
    flat = flatten(obj)
    if not flat:
        raise UserError(f"{source}: the file holds no tensors")
    templates = list(templates) if templates is not None else None
    networks = find_networks(flat, templates)
    if not networks:
        raise UserError(no_match_message(flat, templates, source))
    network, others, rule = choose(networks, prefix, source)
    layout = Layout(network, others, rule)
    _keep_head(layout, flat)
    layout.dropped = _dropped(flat, layout)
    return layout


def no_match_message(flat: Mapping[str, torch.Tensor], templates: list[Template] | None, source: str) -> str:
    """Why nothing fits: with one architecture named, how close the best prefix came."""
    if templates is None or len(templates) != 1:
        return (f"{source}: cannot tell the architecture from the file (no known backbone inside); pass "
                f"--arch NAME, and --prefix NAME if the backbone sits under a prefix")
    template, best = templates[0], (-1, "", [], [])
    view = identity(flat)
    for anchor in template.shapes:
        for key in view:
            if not key.endswith(anchor):
                continue
            prefix = key[: -len(anchor)]
            missing = [k for k in template.shapes if prefix + k not in view and not k.endswith(OPTIONAL_SUFFIX)]
            wrong = [k for k in template.shapes if prefix + k in view and tuple(view[prefix + k][1].shape) != template.shapes[k]]
            score = len(template.shapes) - len(missing) - len(wrong)
            if score > best[0]:
                best = (score, prefix, missing, wrong)
        if best[0] >= 0:
            break
    _, prefix, missing, wrong = best
    if best[0] < 0:
        missing = list(template.shapes)
    unexpected = [k for k in flat if k.startswith(prefix) and k[len(prefix):] not in template.shapes]
    parts = [f"{len(keys)} {label} (e.g. {keys[0]})" for label, keys in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    where = f" under {prefix.rstrip('.')}" if prefix else ""
    return f"{source}: weights do not match architecture {template.arch}{where}: {', '.join(parts)}"


def _keep_head(layout: Layout, flat: Mapping[str, torch.Tensor]) -> None:
    """Keep a SimCLR projection head (Linear without bias, BatchNorm, ReLU, Linear on the features) that
    belongs to no other network; every other head is dropped."""
    skeleton = set(ProjectionHead(1, 1, 1).layers.state_dict())
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        m = re.match(r"^(|.*\.)([0-9]\.[^.]+)$", key)
        if m and not (layout.network.prefix and key.startswith(layout.network.prefix)):
            groups.setdefault(m.group(1), {})[m.group(2)] = value
    heads = []
    for prefix, state in groups.items():
        if set(state) - skeleton or not {"0.weight", "1.weight", "3.weight", "3.bias"} <= set(state):
            continue
        if any(o.prefix and prefix.startswith(o.prefix) or beats(o.prefix, prefix) for o in layout.others):
            continue
        if beats(layout.network.prefix, prefix):  # a momentum or key network's head
            continue
        if state["0.weight"].dim() == 2 and state["0.weight"].shape[1] == layout.network.template.feature_dim:
            heads.append(prefix)
    if len(heads) == 1:
        layout.head_prefix = heads[0]
        layout.head = groups[heads[0]]


def _dropped(flat: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, int]:
    taken = set(layout.network.consumed) | {layout.head_prefix + k for k in layout.head}
    groups: dict[str, int] = {}
    for key in flat:
        if key in taken:
            continue
        group = _group(key, layout)
        groups[group] = groups.get(group, 0) + 1
    return groups


def _group(key: str, layout: Layout) -> str:
    """A short name for what a dropped tensor belongs to: another network, or its first meaningful
    components (`fc`, `projection_head`, `prototypes`, `student.head`, `optimizer`)."""
    for other in layout.others:
        if other.prefix and key.startswith(other.prefix):
            return other.label
    if layout.network.prefix and key.startswith(layout.network.prefix):
        key = key[len(layout.network.prefix):]
    parts = [p for p in key.split(".") if p not in WRAPPERS]
    parts = parts[:-1] if len(parts) > 1 else parts  # the parameter's own name says nothing
    kept = []
    for part in parts:
        if part.isdigit() or len(kept) == 2:
            break
        kept.append(part)
    return ".".join(kept) or key
