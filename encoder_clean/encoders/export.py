"""Writing a cleaned timm or transformers encoder back in its library's own folder layout.

`timm`: `config.json` (architecture, model_args, pretrained_cfg, no classifier) and `model.safetensors`,
which `timm.create_model(..., pretrained=True, pretrained_cfg_overlay={"file": ...})` and the Hub read.
`transformers`: the library's `save_pretrained` folder, plus `preprocessor_config.json` when the source
had one. Our provenance goes into the safetensors metadata. The folder is written beside its final
place and renamed into it, so it is complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

from encoder_clean.encoders.base import Encoder
from encoder_clean.encoders.folders import weight_file
from encoder_clean.encoders.wrapped import TimmEncoder, TransformersEncoder
from encoder_clean.errors import UserError
from encoder_clean.fileio import check_writable_parent, current_umask, sha256_file
from encoder_clean.parallel import world

FORMATS = ("safetensors", "timm", "transformers")


def check_folder_output(path: Path, flag: str = "--out") -> Path:
    """An output folder for --format timm|transformers: absent or empty, in a writable folder."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{flag} {path}: exists and is not an empty folder; name a new folder")
    check_writable_parent(path, flag)
    return path


def _write_timm(encoder: Encoder, folder: Path, metadata: Mapping[str, str]) -> None:
    from safetensors.torch import save_file

    if not isinstance(encoder, TimmEncoder):
        raise UserError(f"--format timm needs a timm encoder, not {encoder.arch}")
    config = json.loads(json.dumps(encoder.model_config))
    config["num_classes"] = 0
    config.setdefault("model_args", {})["num_classes"] = 0
    config["num_features"] = encoder.feature_dim
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata=dict(metadata))


def _write_transformers(encoder: Encoder, folder: Path, metadata: Mapping[str, str]) -> None:
    if not isinstance(encoder, TransformersEncoder):
        raise UserError(f"--format transformers needs a transformers encoder, not {encoder.arch}")
    encoder.model.save_pretrained(str(folder), safe_serialization=True)
    preprocessor = encoder.model_config.get("_preprocessor")
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8")
    (folder / "encoder_clean.json").write_text(json.dumps(dict(metadata), indent=2) + "\n", encoding="utf-8")


WRITERS: dict[str, Callable[[Encoder, Path, Mapping[str, str]], None]] = {
    "timm": _write_timm, "transformers": _write_transformers,
}


def export_folder(encoder: Encoder, path: Path, fmt: str, metadata: Mapping[str, str]) -> str:
    """Write `encoder` as a `fmt` model folder at `path`, atomically (complete or absent); return the
    SHA-256 of its weight file (empty on data-parallel ranks other than 0, which write nothing)."""
    check_folder_output(path)
    if not world().is_main:  # one writer in a data-parallel run
        return ""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        WRITERS[fmt](encoder, staging, metadata)
        os.chmod(staging, 0o777 & ~current_umask())
        if path.exists():
            path.rmdir()  # empty, checked above
        os.replace(staging, path)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise UserError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    return sha256_file(weight_file(path, str(path)))
