"""Load encoders from files and the Hugging Face Hub; save them as safetensors with provenance.

Sources: `.safetensors` (architecture from metadata), `.pt/.pth/.bin/.ckpt/.tar` checkpoints (weights-only
unpickling, never arbitrary code: `encoders/pickles.py`), and `hf://OWNER/REPO[/PATH/IN/REPO][@REVISION]`.
Whatever the file's layout, the backbone is found by `encoders/layouts.py`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from encoder_clean import __version__
from encoder_clean.encoders.base import Encoder, ProjectionHead
from encoder_clean.encoders.folders import load_model_folder
from encoder_clean.encoders.layouts import (OPTIONAL_SUFFIX, Layout, Template, find_backbone, native, template_of,
                                            timm_template)
from encoder_clean.encoders.pickles import read_pickled
from encoder_clean.encoders.registry import create_encoder, get_arch
from encoder_clean.encoders.wrapped import build_wrapped
from encoder_clean.errors import UserError, first_line
from encoder_clean.fileio import atomic_write, sha256_file

FORMAT_VERSION = "1"
HUB_SCHEME = "hf://"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


@dataclass
class LoadedEncoder:
    """An encoder with what its file said about it."""

    encoder: Encoder
    source: str
    path: Path
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)
    has_pretrained_head: bool = False
    #: one line on what was taken from a file in another layout and what was dropped ('' for our own files)
    layout: str = ""

    def setting(self, key: str, default: object = None) -> object:
        """A setting recorded in the metadata, JSON-decoded where it was encoded."""
        if key not in self.metadata:
            return default
        return decode_value(self.metadata[key])


# ------------------------------------------------------------------------------------ loading
def load_encoder(source: str, arch: str | None = None, device: torch.device | str = "cpu",
                 prefix: str | None = None) -> LoadedEncoder:
    """Load an encoder from a local file or an `hf://` reference (see module docstring).

    `prefix` names the network to take where a file holds several (see `encoders/layouts.py`)."""
    loaded = read_encoder(source, arch, prefix)
    check_forward(loaded.encoder, source)
    loaded.encoder.to(device)
    return loaded


def read_encoder(source: str, arch: str | None = None, prefix: str | None = None) -> LoadedEncoder:
    """Build the encoder a file holds and load its weights, without running it."""
    path = resolve_source(source)
    if path.is_dir():  # a timm or transformers model folder (local, or a Hub snapshot)
        if prefix is not None:
            raise UserError(f"{source}: --prefix applies to checkpoint files, not model folders")
        encoder, sha = load_model_folder(path, source)
        encoder.add_head()  # a fresh SimCLR head, as for our files saved without one
        return LoadedEncoder(encoder, source, path, sha, {"arch": encoder.arch}, False)
    contents, metadata = read_checkpoint(path, source)
    encoder, layout = build_from_state(contents, metadata, arch, source, prefix)
    note = "" if metadata.get("format_version") and prefix is None and not layout.dropped else layout.describe()
    return LoadedEncoder(encoder, source, path, sha256_file(path), metadata, bool(layout.head), note)


def read_checkpoint(path: Path, source: str) -> tuple[object, dict[str, str]]:
    """A file's contents (tensors, possibly nested in dicts) and its metadata; never runs code."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return read_pickled(path), {}
    raise UserError(f"{source}: unsupported encoder file type {path.suffix or '(none)'!r}; "
                    f"use .safetensors or one of {', '.join(PICKLE_SUFFIXES)}")


def resolve_source(source: str) -> Path:
    if source.startswith(HUB_SCHEME):
        from encoder_clean.encoders.hub import download

        return download(source)
    path = Path(source)
    if not path.exists():
        raise UserError(f"{source}: no such file")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{source}: a folder without config.json (not a timm or transformers model folder)")
        return path
    if not path.is_file():
        raise UserError(f"{source}: not a file")
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise UserError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    return tensors, metadata


def build_from_state(contents: object, metadata: Mapping[str, str], arch: str | None, source: str,
                     prefix: str | None = None) -> tuple[Encoder, Layout]:
    """Find the backbone (and a SimCLR projection head) in `contents`, build its architecture and load the
    weights; mismatches become one clear UserError."""
    meta_arch = metadata.get("arch")
    if arch and meta_arch and arch != meta_arch:
        raise UserError(f"{source}: --arch {arch} contradicts the file's architecture {meta_arch}")
    arch = arch or meta_arch
    templates = [_template(arch, metadata, source)] if arch else None
    layout = find_backbone(contents, source, templates=templates, prefix=prefix)
    encoder = layout.network.template.build()
    module = native(encoder)
    # BatchNorm step counters are not weights; files written before torch counted them lack them.
    state = {**{k: v for k, v in module.state_dict().items() if k.endswith(OPTIONAL_SUFFIX)}, **layout.network.state}
    _check_finite(state, source)
    _load_strict(module, state, layout.arch, source)
    if layout.head:
        _check_finite(layout.head, source)
        encoder.head = _head_from_state(layout.head, encoder.feature_dim, source)
    else:
        encoder.add_head()
    return encoder, layout


def _template(arch: str, metadata: Mapping[str, str], source: str) -> Template:
    """The one architecture a file must hold: named by --arch or by its metadata."""
    if "/" in arch:  # a timm or transformers model: rebuilt from the config in the metadata, or by timm's name
        if metadata.get("model_config") or not arch.startswith("timm/"):
            factory = functools.partial(build_wrapped, arch, metadata.get("model_config"), source)
            return template_of(factory, arch)
        return timm_template(arch.split("/", 1)[1])
    get_arch(arch)  # an unknown name fails here, with the known ones
    factory = functools.partial(create_encoder, arch, image_size=_meta_int(metadata, "image_size", source),
                                mean=_meta_floats(metadata, "mean", source), std=_meta_floats(metadata, "std", source),
                                head=False)
    return template_of(factory, arch)


@torch.no_grad()
def check_forward(encoder: Encoder, source: str) -> None:
    """Finite weights can still overflow: refuse an encoder whose features on plain images are not finite."""
    size = encoder.image_size
    ramp = torch.linspace(0, 1, size * size).reshape(1, 1, size, size)
    images = torch.cat([ramp.expand(1, 3, size, size), 1 - ramp.expand(1, 3, size, size)])
    was_training = encoder.training
    features = encoder.eval().features(images)
    encoder.train(was_training)
    if not bool(torch.isfinite(features).all()):
        raise UserError(f"{source}: the encoder's features are not finite on plain images (weights out of range)")


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], arch: str, source: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise UserError(f"{source}: weights do not match architecture {arch}: {', '.join(parts)}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _head_from_state(head: Mapping[str, torch.Tensor], feature_dim: int, source: str) -> ProjectionHead:
    try:
        hidden, in_dim = head["0.weight"].shape
        out_dim = head["3.weight"].shape[0]
    except (KeyError, ValueError):
        raise UserError(f"{source}: the projection head is not a Linear-BN-ReLU-Linear head") from None
    if in_dim != feature_dim:
        raise UserError(f"{source}: projection head takes {in_dim} features, the encoder gives {feature_dim}")
    module = ProjectionHead(feature_dim, hidden_dim=int(hidden), out_dim=int(out_dim))
    _load_strict(module.layers, head, "projection head", source)
    return module


MAX_WEIGHT = 1e12  # far beyond any trained encoder's weights or BatchNorm statistics; larger values overflow


def _check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        if not bool(torch.isfinite(value).all()):
            raise UserError(f"{source}: weight {key} holds NaN or infinite values")
        if value.numel() and float(value.abs().max()) > MAX_WEIGHT:
            raise UserError(f"{source}: weight {key} holds values of {float(value.abs().max()):.3g}, beyond any "
                            f"trained encoder's")


def _meta_int(metadata: Mapping[str, str], key: str, source: str) -> int | None:
    if key not in metadata:
        return None
    try:
        value = int(metadata[key])
    except ValueError:
        raise UserError(f"{source}: metadata {key}={metadata[key]!r} is not an integer") from None
    if not 8 <= value <= 4096:
        raise UserError(f"{source}: metadata {key}={value} is out of range")
    return value


def _meta_floats(metadata: Mapping[str, str], key: str, source: str) -> tuple[float, ...] | None:
    if key not in metadata:
        return None
    try:
        values = tuple(float(v) for v in json.loads(metadata[key]))
    except (ValueError, TypeError):
        raise UserError(f"{source}: metadata {key}={metadata[key]!r} is not a list of numbers") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or (key == "std" and min(values) <= 0):
        raise UserError(f"{source}: metadata {key}={metadata[key]!r} must be three (positive) numbers")
    return values


# ------------------------------------------------------------------------------------ saving
def save_encoder(encoder: Encoder, path: str | Path, *, produced_by: str,
                 parent_sha256: str | None = None, settings: Mapping[str, object] | None = None) -> str:
    """Write `encoder` (backbone and head) as safetensors with provenance metadata, atomically.

    Returns the SHA-256 of the written file. The bytes depend only on the weights and the metadata, so
    the same seed on the CPU gives the same file.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: output checkpoints are .safetensors files")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    metadata = checkpoint_metadata(encoder, produced_by=produced_by, parent_sha256=parent_sha256, settings=settings)
    payload = canonical_safetensors(tensors, metadata)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload))
    return hashlib.sha256(payload).hexdigest()


def checkpoint_metadata(encoder: Encoder, *, produced_by: str, parent_sha256: str | None = None,
                        settings: Mapping[str, object] | None = None) -> dict[str, str]:
    """The provenance and architecture strings every output carries (docs/formats.md)."""
    metadata = {"format_version": FORMAT_VERSION, "produced_by": produced_by, "parent_sha256": parent_sha256 or ""}
    metadata.update({k: encode_value(v) for k, v in encoder.spec().items()})
    for key, value in (settings or {}).items():
        if key in metadata:
            raise ValueError(f"setting {key!r} would overwrite reserved metadata")
        metadata[key] = encode_value(value)
    return metadata


def canonical_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes with the JSON header's keys sorted.

    The safetensors writer orders the metadata through a hash map whose order changes between calls,
    so the same weights could give different bytes; re-serialising the header sorted makes the output a
    function of the weights and metadata alone.
    """
    raw = save(dict(tensors), metadata=dict(metadata))
    header_length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8-byte alignment with spaces
    return len(text).to_bytes(8, "little") + text + raw[8 + header_length:]


def encode_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def decode_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def produced_by(command: str) -> str:
    return f"encoder-clean {__version__} {command}"
