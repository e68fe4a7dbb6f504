"""What a checkpoint holds, read without running it: the facts `encoder-clean inspect` shows.

The file is read as `load_encoder` reads it (safetensors, or a weights-only unpickling that builds
nothing but tensors and plain containers), the architecture is built and the weights are loaded, but no
image goes through the model. A file whose backbone cannot be told still gets its format, hash, tensor
count and metadata, with the reason it cannot be loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from encoder_clean.encoders.folders import CONFIG, layout_of, read_json
from encoder_clean.encoders.io import decode_value, read_checkpoint, read_encoder, resolve_source
from encoder_clean.encoders.layouts import flatten, native
from encoder_clean.encoders.pickles import named_globals
from encoder_clean.errors import UserError
from encoder_clean.fileio import sha256_file

#: metadata keys that describe the architecture (shown as such, not as provenance or settings)
SPEC_KEYS = ("arch", "image_size", "feature_dim", "mean", "std", "model_config")
PROVENANCE_KEYS = ("format_version", "produced_by", "parent_sha256")


@dataclass
class CheckpointReport:
    source: str
    path: str
    format: str
    bytes: int | None
    sha256: str
    tensors: int
    arch: str | None = None
    recognised_by: str | None = None
    layout: str | None = None
    image_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    feature_dim: int | None = None
    taps: list[str] = field(default_factory=list)
    parameters: int | None = None
    projection_head: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the encoder cannot be loaded, when it cannot
    #: classes and functions a pickle names beyond tensors: read as inert placeholders, never built
    pickled_classes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_checkpoint(source: str, arch: str | None = None, prefix: str | None = None) -> CheckpointReport:
    """Everything `inspect` reports about `source` (a file, a model folder or an hf:// reference).

    Unreadable files (corrupt, refused pickles, missing) raise UserError; a readable file whose encoder
    cannot be built comes back with `error` set."""
    path = resolve_source(source)
    if path.is_dir():
        report = CheckpointReport(source, str(path), f"{layout_of(read_json(path / CONFIG, source))} model folder",
                                  None, "", 0)
    else:
        contents, metadata = read_checkpoint(path, source)
        report = CheckpointReport(source, str(path), _format(path), path.stat().st_size, sha256_file(path),
                                  len(flatten(contents)))
        report.provenance = {k: metadata[k] for k in PROVENANCE_KEYS if k in metadata}
        report.pickled_classes = named_globals(path) if path.suffix != ".safetensors" else []
        report.settings = {k: decode_value(v) for k, v in metadata.items() if k not in (*SPEC_KEYS, *PROVENANCE_KEYS)}
    try:
        loaded = read_encoder(source, arch, prefix)
    except UserError as error:
        report.error = str(error)
        return report
    encoder = loaded.encoder
    report.sha256 = loaded.sha256
    report.arch = encoder.arch
    report.recognised_by = _recognised_by(loaded.metadata, arch, path)
    report.layout = loaded.layout or None
    report.image_size = encoder.image_size
    report.mean = [round(float(v), 6) for v in encoder.mean.flatten()]
    report.std = [round(float(v), 6) for v in encoder.std.flatten()]
    report.feature_dim = encoder.feature_dim
    report.taps = [*encoder.tap_names, *encoder.attention_taps]
    report.parameters = sum(p.numel() for name, p in encoder.named_parameters() if not name.startswith("head."))
    report.projection_head = ("pretrained SimCLR head (Linear-BN-ReLU-Linear)" if loaded.has_pretrained_head
                              else "none in the file (a fresh one is added for training)")
    if path.is_dir():
        report.tensors = len(native(encoder).state_dict())
    return report


def _format(path: Path) -> str:
    if path.suffix == ".safetensors":
        return "safetensors"
    return "PyTorch pickle (read weights-only: tensors and plain containers, nothing else is built)"


def _recognised_by(metadata: dict[str, str], arch: str | None, path: Path) -> str:
    if path.is_dir():
        return f"the folder's {CONFIG}"
    if arch:
        return "--arch"
    if metadata.get("arch"):
        return "the file's metadata"
    return "its parameter names and shapes"
