"""Model folders in the timm and transformers Hub layouts, recognised by their config.json.

- timm: `config.json` with `architecture` (plus `model_args`, `pretrained_cfg`), weights in
  `model.safetensors` or `pytorch_model.bin`; the classifier is dropped, the embedding is timm's
  pre-logits feature.
- transformers: `config.json` with `model_type` (`vit`, `dinov2`, `clip_vision_model`, `clip`), weights
  loaded by the library itself (safetensors, or `torch.load(weights_only=True)`), preprocessing from
  `preprocessor_config.json` when the folder has one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

from encoder_clean.encoders.wrapped import TimmEncoder, TransformersEncoder, WrappedEncoder, require
from encoder_clean.errors import UserError, first_line
from encoder_clean.fileio import load_tensors_only, sha256_file

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: what a Hub download fetches besides config.json: the first weight file present, and the preprocessor
OPTIONAL_FILES = (PREPROCESSOR,)


def read_json(path: Path, source: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{source}: {path.name} is not readable JSON ({first_line(error, 120)})") from None
    if not isinstance(value, dict):
        raise UserError(f"{source}: {path.name} is not a JSON object")
    return value


def layout_of(config: dict[str, Any]) -> str:
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    raise UserError("config.json names neither a timm 'architecture' nor a transformers 'model_type'")


def weight_file(folder: Path, source: str) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{source}: no {' or '.join(WEIGHT_FILES)} in the model folder")


def _load_timm(folder: Path, config: dict[str, Any], source: str) -> WrappedEncoder:
    encoder = TimmEncoder.from_config(config)
    path = weight_file(folder, source)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except Exception as error:  # noqa: BLE001 - any parse failure is a bad file
            raise UserError(f"{source}: {path.name} is not readable ({first_line(error, 120)})") from None
    else:
        state = load_tensors_only(path, "timm weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{source}: {path.name} does not hold a state dict of tensors")
    dropped = encoder.classifier_prefixes()
    state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    missing, unexpected = encoder.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        keys = (missing or unexpected)[:1]
        raise UserError(f"{source}: weights do not match timm {config['architecture']}: {len(missing)} missing, "
                        f"{len(unexpected)} unexpected (e.g. {keys[0]})")
    return encoder


def _load_transformers(folder: Path, config: dict[str, Any], source: str) -> WrappedEncoder:
    transformers = require("transformers", "transformers")
    skeleton = TransformersEncoder.from_config(config, _preprocessor(folder, source))
    weight_file(folder, source)
    model_class = type(skeleton.model)
    transformers.logging.set_verbosity_error()  # it reports the text tower of a CLIP checkpoint as unused
    transformers.logging.disable_progress_bar()  # the library never prints: no loading bars
    try:
        model = model_class.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # noqa: BLE001 - the library raises many types for bad folders
        raise UserError(f"{source}: transformers could not load the model ({first_line(error, 160)})") from None
    return TransformersEncoder.from_config(config, _preprocessor(folder, source), model.eval())


def _preprocessor(folder: Path, source: str) -> dict[str, Any] | None:
    path = folder / PREPROCESSOR
    return read_json(path, source) if path.is_file() else None


LOADERS: dict[str, Callable[[Path, dict[str, Any], str], WrappedEncoder]] = {
    "timm": _load_timm, "transformers": _load_transformers,
}


def load_model_folder(folder: Path, source: str) -> tuple[WrappedEncoder, str]:
    """The encoder of a timm or transformers model folder, and a SHA-256 over its config and weights."""
    config = read_json(folder / CONFIG, source)
    try:
        layout = layout_of(config)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    encoder = LOADERS[layout](folder, config, source)
    # The folder's identity for provenance: the hash of its config's and its weights' hashes.
    files = (folder / CONFIG, weight_file(folder, source))
    return encoder, hashlib.sha256("".join(sha256_file(path) for path in files).encode()).hexdigest()
