"""Encoders from other libraries' model folders: timm checkpoints and transformers vision models.

Both wrap the library's own module (`self.model`), so features equal the library's forward. Their layer
taps are the library's blocks (`blocks.N` for ViTs, `layer1`..`layer4` for ResNets), read with forward
hooks; a ViT block's tokens come back as a feature map (N, C, h, w) of its patch tokens (class and
register tokens dropped), so every map-based distillation loss applies to ViTs unchanged.

What rebuilds the module travels in the checkpoint metadata (`model_config`: the library's config), so
our own safetensors of a wrapped encoder reload without the original folder. The libraries are optional
extras: a missing one is a one-line UserError naming the extra to install.
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from encoder_clean.encoders.base import Encoder
from encoder_clean.errors import UserError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this encoder needs {module}: pip install 'encoder-clean[{extra}]'") from None


def tokens_to_map(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(N, T, C) block output -> (N, C, h, w) map of its patch tokens."""
    patches = tokens[:, prefix:]
    h, w = grid
    if patches.shape[1] != h * w:
        raise UserError(f"a block gave {patches.shape[1]} patch tokens, expected {h} x {w}")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class WrappedEncoder(Encoder):
    """Shared by the timm and transformers wrappers: taps through forward hooks on named submodules."""

    family = ""

    def __init__(self, arch: str, model: nn.Module, config: Mapping[str, Any], feature_dim: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float], taps: Sequence[str]):
        super().__init__(arch, feature_dim, image_size, mean, std)
        self.model = model
        self.model_config = dict(config)
        self.tap_names = tuple(taps)

    def tap_output(self, name: str, output: Any) -> torch.Tensor:
        """A hooked module's output as a feature map (ViT tokens become a patch grid)."""
        return output[0] if isinstance(output, tuple) else output

    def run_model(self, images: torch.Tensor, attention: Sequence[str], captured: dict[str, torch.Tensor]
                  ) -> torch.Tensor:
        """The embedding; also puts the attention probabilities of the `attention` taps into `captured`."""
        raise NotImplementedError

    def features_with_taps(self, images, taps=()):
        self.check_taps(list(taps))
        captured: dict[str, torch.Tensor] = {}
        handles = [self.model.get_submodule(self.tap_module(name)).register_forward_hook(self._catch(name, captured))
                   for name in taps if name in self.tap_names]
        attention = [name for name in taps if name in self.attention_taps]
        try:
            features = self.run_model(self.normalize(images), attention, captured)
        finally:
            for handle in handles:
                handle.remove()
        return features, {name: captured[name] for name in taps}

    def tap_module(self, tap: str) -> str:
        return tap

    def _catch(self, name: str, captured: dict[str, torch.Tensor]) -> Callable[..., None]:
        def hook(_module, _inputs, output) -> None:
            captured[name] = self.tap_output(name, output)
        return hook

    def spec(self) -> dict[str, object]:
        return {**super().spec(), "model_config": json.dumps(self.model_config, sort_keys=True)}

    def reinitialised(self) -> "WrappedEncoder":
        return FAMILIES[self.family](self.model_config)


# ------------------------------------------------------------------------------ timm
class TimmEncoder(WrappedEncoder):
    family = "timm"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "TimmEncoder":
        timm = require("timm", "timm")
        name = config.get("architecture")
        if not isinstance(name, str):
            raise UserError("timm config.json has no 'architecture'")
        args = {k: v for k, v in dict(config.get("model_args") or {}).items() if k != "num_classes"}
        try:
            model = timm.create_model(name, pretrained=False, num_classes=0, **args)
        except Exception as error:  # timm raises RuntimeError for unknown names, TypeError for bad args
            raise UserError(f"timm cannot build {name!r} ({first_line(error, 160)})") from None
        pretrained = dict(config.get("pretrained_cfg") or {})
        size = _square(pretrained.get("input_size", [3, 224, 224])[-2:], f"timm {name}")
        taps = [info["module"] for info in getattr(model, "feature_info", []) if info.get("module")]
        taps = [t for t in taps if t.startswith(("blocks.", "layer", "stages."))]
        return cls(f"timm/{name}", model, config, int(model.num_features), size,
                   pretrained.get("mean", IMAGENET_MEAN), pretrained.get("std", IMAGENET_STD), taps)

    @property
    def token_side(self) -> int | None:
        patch_embed = getattr(self.model, "patch_embed", None)
        size = getattr(patch_embed, "patch_size", None)
        return int(size[0] if isinstance(size, (tuple, list)) else size) if size else None

    @property
    def attention_taps(self) -> tuple[str, ...]:
        blocks = getattr(self.model, "blocks", None)
        if blocks is None or not all(hasattr(getattr(b, "attn", None), "qkv") for b in blocks):
            return ()
        return tuple(f"attn.{i}" for i in range(len(blocks)))

    def run_model(self, images, attention=(), captured=None):
        handles = [self.model.blocks[int(name.split(".")[1])].attn.register_forward_pre_hook(
            self._attention_probabilities(name, captured)) for name in attention]
        try:
            return self.model(images)
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _attention_probabilities(name: str, captured: dict[str, torch.Tensor]) -> Callable[..., None]:
        """Recompute timm's fused attention's probabilities from the block's normalised input."""
        def hook(attn, inputs) -> None:
            x = inputs[0]
            batch, tokens, _ = x.shape
            qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            captured[name] = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return hook

    def tap_output(self, name, output):
        output = super().tap_output(name, output)
        if output.ndim == 3:  # ViT tokens
            grid = tuple(self.model.patch_embed.grid_size)
            return tokens_to_map(output, int(getattr(self.model, "num_prefix_tokens", 1)), grid)
        return output

    def classifier_prefixes(self) -> tuple[str, ...]:
        classifier = dict(self.model_config.get("pretrained_cfg") or {}).get("classifier") or "head"
        names = [classifier] if isinstance(classifier, str) else list(classifier)
        return tuple(f"{n}." for n in names)


# ------------------------------------------------------------------------------ transformers
# model_type -> (model class, how the embedding is taken, default mean, default std)
TRANSFORMERS_MODELS: dict[str, tuple[str, str, tuple, tuple]] = {
    "vit": ("ViTModel", "cls", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": ("Dinov2Model", "pooler", IMAGENET_MEAN, IMAGENET_STD),
    "clip_vision_model": ("CLIPVisionModel", "pooler", CLIP_MEAN, CLIP_STD),
    "clip": ("CLIPVisionModel", "pooler", CLIP_MEAN, CLIP_STD),
}


class TransformersEncoder(WrappedEncoder):
    family = "transformers"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None,
                    model: nn.Module | None = None) -> "TransformersEncoder":
        transformers = require("transformers", "transformers")
        model_type = config.get("model_type")
        if model_type not in TRANSFORMERS_MODELS:
            raise UserError(f"transformers model_type {model_type!r} is not supported; "
                            f"supported: {', '.join(sorted(TRANSFORMERS_MODELS))}")
        class_name, pooling, mean, std = TRANSFORMERS_MODELS[model_type]
        vision = dict(config.get("vision_config") or {}) if model_type == "clip" else dict(config)
        vision.pop("model_type", None)
        config_class = getattr(transformers, class_name).config_class
        try:
            hf_config = config_class(**{k: v for k, v in vision.items() if k not in ("architectures", "transformers_version")})
        except Exception as error:  # noqa: BLE001 - a config the library refuses
            raise UserError(f"transformers cannot read this {model_type} config ({first_line(error, 160)})") from None
        if model is None:
            model = getattr(transformers, class_name)(hf_config)
        preprocessor = dict(preprocessor or {})
        size = _processor_size(preprocessor) or int(hf_config.image_size)
        encoder = cls(f"transformers/{model_type}", model, {**config, "_preprocessor": preprocessor},
                      int(hf_config.hidden_size), size, preprocessor.get("image_mean", mean),
                      preprocessor.get("image_std", std), [f"blocks.{i}" for i in range(hf_config.num_hidden_layers)])
        encoder.pooling = pooling
        encoder.patch_grid = (size // int(hf_config.patch_size),) * 2
        encoder.prefix_tokens = 1
        return encoder

    @property
    def token_side(self) -> int | None:
        return self.image_size // self.patch_grid[0]

    @property
    def attention_taps(self) -> tuple[str, ...]:
        return tuple(f"attn.{name.split('.')[1]}" for name in self.tap_names)

    def run_model(self, images, attention=(), captured=None):
        if attention:
            # Fused attention kernels do not return probabilities; the eager one computes the same output.
            self.model.set_attn_implementation("eager")
            out = self.model(pixel_values=images, output_attentions=True)
            captured.update({name: out.attentions[int(name.split(".")[1])] for name in attention})
        else:
            out = self.model(pixel_values=images)
        return out.last_hidden_state[:, 0] if self.pooling == "cls" else out.pooler_output

    def tap_module(self, tap):
        return f"{self.layers_path}.{int(tap.split('.')[1])}"

    @functools.cached_property
    def layers_path(self) -> str:
        """Where the transformer blocks sit (`encoder.layer`, `layers`, `vision_model.encoder.layers`, ...:
        the library moves them between versions): the ModuleList of one module per hidden layer."""
        count = len(self.tap_names)
        for name, module in self.model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == count and name.split(".")[-1] in ("layer", "layers"):
                return name
        raise UserError(f"{self.arch}: cannot find its {count} transformer blocks")

    def tap_output(self, name, output):
        return tokens_to_map(super().tap_output(name, output), self.prefix_tokens, self.patch_grid)


def _square(size: Sequence[int], what: str) -> int:
    h, w = (int(s) for s in size)
    if h != w:
        raise UserError(f"{what}: input size {h}x{w} is not square; only square inputs are supported")
    return h


def _processor_size(preprocessor: Mapping[str, Any]) -> int | None:
    for key in ("crop_size", "size"):
        value = preprocessor.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            if "height" in value:
                return _square((value["height"], value.get("width", value["height"])), "preprocessor_config")
            if "shortest_edge" in value:
                return int(value["shortest_edge"])
    return None


FAMILIES: dict[str, Callable[..., WrappedEncoder]] = {
    "timm": TimmEncoder.from_config,
    "transformers": lambda config: TransformersEncoder.from_config(config, config.get("_preprocessor")),
}


def build_wrapped(arch: str, model_config: str | None, source: str) -> WrappedEncoder:
    """Rebuild a wrapped encoder from our checkpoint metadata (`arch` = FAMILY/NAME, `model_config`)."""
    family = arch.split("/", 1)[0]
    if family not in FAMILIES or not model_config:
        raise UserError(f"{source}: architecture {arch} needs its model_config in the metadata")
    try:
        config = json.loads(model_config)
    except ValueError:
        raise UserError(f"{source}: metadata model_config is not JSON") from None
    if not isinstance(config, dict):
        raise UserError(f"{source}: metadata model_config is not a JSON object")
    return FAMILIES[family](config)


# ------------------------------------------------------------------------------ small ViTs by name
def _timm_vit(arch: str, image_size: int, mean: Sequence[float], std: Sequence[float], *, depth: int, width: int,
              heads: int, patch: int) -> TimmEncoder:
    """A small timm VisionTransformer (class token, pre-norm blocks) for CPU work on 32 px images."""
    config = {"architecture": "vit_tiny_patch16_224",
              "model_args": {"img_size": image_size, "patch_size": patch, "depth": depth, "embed_dim": width,
                             "num_heads": heads},
              "pretrained_cfg": {"input_size": [3, image_size, image_size], "mean": list(mean), "std": list(std),
                                 "classifier": "head"}}
    return TimmEncoder.from_config(config)


def register_small_vits() -> None:
    from encoder_clean.encoders.registry import register_arch

    register_arch("vit-p4-d4-w64", _timm_vit, "ViT, patch 4 at 32 px, 4 blocks of width 64, 4 heads "
                  "(timm; needs encoder-clean[timm])", depth=4, width=64, heads=4, patch=4)
