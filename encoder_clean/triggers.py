"""Backdoor triggers: how they are named, read from files, and stamped onto images.

A trigger spec is one of
- a built-in name with optional size and position: `white-square`, `checkerboard:8`, `noise-patch@2,2`,
  `white-square:6@4,20` (`NAME[:SIZE][@ROW,COL]`; the default place is the bottom-right corner, one
  pixel from the border, as the papers use);
- a PNG with an alpha channel (alpha is the mask), optionally `path.png@ROW,COL` when it is smaller than
  the image;
- an `.npz` in the BadEncoder release's format: arrays `t` (pattern, 0-255) and `tm` (mask), stamped
  as `x * tm + t`.
Patch triggers stamp as `x * (1 - mask) + pattern * mask` on images with values in [0, 1]. The kinds
of trigger are a registry, so triggers that are not patches (e.g. frequency-domain ones) plug in.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from encoder_clean.errors import UserError, first_line
from encoder_clean.registry import Registry
from encoder_clean.frequency_trigger import CTRL_DESCRIPTION, CTRL_USAGE, KIND as CTRL_KIND, load_ctrl_trigger
from encoder_clean.trigger_base import Trigger

Tensor = torch.Tensor
PAPER_PATCH = 10  # the 10x10 white square at 32 px (BadEncoder, Jia et al., IEEE S&P 2022)
PAPER_PATCH_224 = 50
MARGIN = 1


@dataclass
class PatchTrigger(Trigger):
    """A pattern and a mask on the full image canvas (3, H, W) and (1 or 3, H, W), values in [0, 1]."""

    spec: str
    pattern: Tensor
    mask: Tensor

    @property
    def image_size(self) -> int:
        return int(self.pattern.shape[-1])

    def stamp(self, images: Tensor) -> Tensor:
        if tuple(images.shape[-2:]) != tuple(self.pattern.shape[-2:]):
            raise UserError(f"trigger {self.spec} is {self.pattern.shape[-1]} px but images are "
                            f"{images.shape[-1]} px")
        pattern = self.pattern.to(images.device, images.dtype)
        mask = self.mask.to(images.device, images.dtype)
        return images * (1 - mask) + pattern * mask

    def describe(self) -> dict[str, object]:
        rows, cols = torch.nonzero(self.mask.amax(dim=0) > 0, as_tuple=True)
        box = [int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())] if len(rows) else []
        return {"spec": self.spec, "image_size": self.image_size, "mask_l1": float(self.mask.amax(0).sum()),
                "bbox": box}

    def to_rgba(self) -> np.ndarray:
        """(H, W, 4) uint8: pattern in RGB, mask in alpha (the PNG trigger format)."""
        rgb = (self.pattern.clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        alpha = (self.mask.amax(dim=0, keepdim=True).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        return torch.cat([rgb, alpha], dim=2).cpu().numpy()


# ------------------------------------------------------------------------------ placement
def default_patch_size(image_size: int) -> int:
    """10 px at 32 px and 50 px at 224 px as in the papers; proportional elsewhere."""
    if image_size == 224:
        return PAPER_PATCH_224
    return max(1, round(image_size * PAPER_PATCH / 32))


def place_patch(spec: str, patch: Tensor, patch_mask: Tensor, image_size: int,
                position: tuple[int, int] | None) -> PatchTrigger:
    """Put a (C, h, w) patch onto an empty canvas at `position` (default: bottom-right, 1 px margin)."""
    h, w = patch.shape[-2:]
    if h > image_size or w > image_size:
        raise UserError(f"trigger {spec} ({h}x{w}) is larger than the {image_size}x{image_size} image")
    row, col = position if position is not None else (image_size - MARGIN - h, image_size - MARGIN - w)
    row, col = (max(0, row), max(0, col)) if position is None else (row, col)
    if row < 0 or col < 0 or row + h > image_size or col + w > image_size:
        raise UserError(f"trigger {spec}: a {h}x{w} patch at row {row}, column {col} does not fit "
                        f"in a {image_size}x{image_size} image")
    pattern = torch.zeros(3, image_size, image_size)
    mask = torch.zeros(patch_mask.shape[0], image_size, image_size)
    pattern[:, row:row + h, col:col + w] = patch
    mask[:, row:row + h, col:col + w] = patch_mask
    return PatchTrigger(spec, pattern, mask)


# ------------------------------------------------------------------------------ built-in patches
def _white(size: int) -> Tensor:
    return torch.ones(3, size, size)


def _checkerboard(size: int) -> Tensor:
    index = torch.arange(size)
    board = ((index.view(-1, 1) + index.view(1, -1)) % 2).float()
    return board.expand(3, size, size).clone()


def _noise(size: int) -> Tensor:
    g = torch.Generator().manual_seed(1234)  # fixed: the same pattern everywhere
    return (torch.rand(3, size, size, generator=g) > 0.5).float()


PATCHES: dict[str, tuple[Callable[[int], Tensor], str]] = {
    "white-square": (_white, "solid white square (the papers' 10x10 trigger at 32 px)"),
    "checkerboard": (_checkerboard, "black-and-white 1-pixel checkerboard square"),
    "noise-patch": (_noise, "fixed random black/white RGB noise square"),
}


def _blend(image_size: int, alpha: float = 0.15) -> PatchTrigger:
    """A full-image pattern blended at low opacity (Hello-Kitty-style blend attacks)."""
    g = torch.Generator().manual_seed(4321)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    pattern = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="nearest")[0]
    return PatchTrigger("blend", pattern, torch.full((1, image_size, image_size), alpha))


def builtin_trigger_names() -> dict[str, str]:
    names = {name: text for name, (_, text) in PATCHES.items()}
    names["blend"] = "full-image random pattern blended at 15% opacity"
    return names


# ------------------------------------------------------------------------------ parsing
_POSITION = re.compile(r"^(?P<body>.*?)(?:@(?P<row>-?\d+),(?P<col>-?\d+))?$")


def _split_position(spec: str) -> tuple[str, tuple[int, int] | None]:
    match = _POSITION.match(spec)
    assert match is not None
    position = (int(match["row"]), int(match["col"])) if match["row"] is not None else None
    return match["body"], position


def load_trigger(spec: str, image_size: int) -> Trigger:
    """Read a trigger spec (see the module docstring) for images of `image_size` pixels."""
    spec = (spec or "").strip()
    if not spec:
        raise UserError("empty trigger spec")
    kind, _, rest = spec.partition(":")
    if kind in TRIGGER_KINDS:
        return TRIGGER_KINDS.get(kind).loader(spec, rest, image_size)
    body, position = _split_position(spec)
    name, _, size_text = body.partition(":")
    if name in PATCHES or name == "blend":
        return _load_builtin(spec, name, size_text, position, image_size)
    path = Path(body)
    if path.suffix.lower() in (".png", ".npz"):
        if not path.is_file():
            raise _missing_trigger_file(path)
        loader = _load_png if path.suffix.lower() == ".png" else _load_npz
        patch, mask = loader(path)
        if tuple(patch.shape[-2:]) == (image_size, image_size) and position is None:
            return PatchTrigger(spec, patch, mask)
        return place_patch(spec, patch, mask, image_size, position)
    known = ", ".join(sorted(builtin_trigger_names()) + [f"{k}:" for k in TRIGGER_KINDS.items()])
    raise UserError(f"unknown trigger {spec!r}: give a .png or .npz file or a built-in ({known})")


def _missing_trigger_file(path: Path) -> UserError:
    """A trigger file that is not there; relative paths are read from the current folder, so a command
    copied from elsewhere often names a sample file that the built-in of the same name makes without a file."""
    stem = path.stem.replace("_", "-")
    same = [name for name in builtin_trigger_names() if stem.startswith(name)]
    hint = (f"; the built-in trigger {same[0]!r} needs no file" if same else
            f"; built-in triggers need no file: {', '.join(builtin_trigger_names())}")
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    return UserError(f"trigger file {path} not found{where}{hint}")


def _load_builtin(spec: str, name: str, size_text: str, position: tuple[int, int] | None,
                  image_size: int) -> PatchTrigger:
    if name == "blend":
        if size_text or position:
            raise UserError("trigger blend takes no size or position")
        return _blend(image_size)
    if size_text:
        if not size_text.isdigit() or int(size_text) < 1:
            raise UserError(f"trigger {spec}: size must be a positive integer")
        size = int(size_text)
    else:
        size = default_patch_size(image_size)
    patch = PATCHES[name][0](size)
    return place_patch(spec, patch, torch.ones(1, size, size), image_size, position)


def _load_png(path: Path) -> tuple[Tensor, Tensor]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about large images; the size check below refuses them
            with Image.open(path) as image:
                if image.width * image.height > 4096 * 4096:
                    raise UserError(f"trigger {path}: image of {image.width}x{image.height} is too large")
                has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
                array = np.asarray(image.convert("RGBA"))
    except UserError:
        raise
    except Exception as error:  # decoders raise many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise UserError(f"trigger {path}: not a readable PNG ({first_line(error, 200)})") from None
    if not has_alpha:
        raise UserError(f"trigger {path}: the PNG has no alpha channel (alpha is the trigger's mask)")
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
    return tensor[:3], tensor[3:]


def _load_npz(path: Path) -> tuple[Tensor, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "t" not in arrays or "tm" not in arrays:
                raise UserError(f"trigger {path}: npz needs arrays 't' (pattern) and 'tm' (mask)")
            t, tm = np.asarray(arrays["t"], dtype=np.float64), np.asarray(arrays["tm"], dtype=np.float64)
    except UserError:
        raise
    except Exception as error:  # zip/npy parsing raises many types on corrupt files
        raise UserError(f"trigger {path}: not a readable npz ({first_line(error, 200)})") from None
    t, tm = (a[0] if a.ndim == 4 else a for a in (t, tm))  # the release stores a list of triggers
    if t.ndim != 3 or t.shape != tm.shape or t.shape[-1] != 3:
        raise UserError(f"trigger {path}: 't' and 'tm' must both be (H, W, 3), got {t.shape} and {tm.shape}")
    if not (np.isfinite(t).all() and np.isfinite(tm).all()):
        raise UserError(f"trigger {path}: arrays hold NaN or infinite values")
    scale = 255.0 if t.max() > 1.0 else 1.0
    mask = np.clip(1.0 - tm, 0, 1)
    # x * tm + t == x * (1 - mask) + pattern * mask  =>  pattern = t / mask where the mask is set.
    pattern = np.where(mask > 0, t / scale / np.maximum(mask, 1e-8), 0.0).clip(0, 1)
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()  # noqa: E731
    return to_tensor(pattern), to_tensor(mask)


def save_trigger_png(trigger: PatchTrigger, path: str | Path) -> None:
    from PIL import Image

    from encoder_clean.fileio import atomic_write

    atomic_write(path, lambda tmp: Image.fromarray(trigger.to_rgba(), "RGBA").save(tmp, format="PNG"))


def save_trigger_npz(trigger: PatchTrigger, path: str | Path) -> None:
    """The BadEncoder release's format: t in 0-255 and tm, each with a leading list axis."""
    from encoder_clean.fileio import atomic_write

    mask = trigger.mask.expand(3, -1, -1).permute(1, 2, 0).numpy()
    t = (trigger.pattern.permute(1, 2, 0).numpy() * mask * 255).round().astype(np.uint8)[None]
    tm = (1 - mask).astype(np.float64)[None]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, t=t, tm=tm)

    atomic_write(path, write)


# Kinds of trigger that are not patches register a loader here, keyed by their spec prefix:
# `kind:rest` -> loader(spec, rest, image_size), with a usage line and a description for `list triggers`.
@dataclass(frozen=True)
class TriggerKind:
    loader: Callable[[str, str, int], Trigger]
    usage: str
    description: str


TRIGGER_KINDS: Registry[TriggerKind] = Registry("trigger kind")
FILE_TRIGGERS = {
    "FILE.png[@ROW,COL]": "pattern in RGB, mask in alpha",
    "FILE.npz": "BadEncoder release format: arrays t and tm, stamped as x * tm + t",
}


def register_trigger_kind(kind: str, loader: Callable[[str, str, int], Trigger], usage: str,
                          description: str) -> None:
    TRIGGER_KINDS.register(kind, TriggerKind(loader, usage, description))


def trigger_help() -> dict[str, str]:
    """Every accepted trigger form (usage -> description): built-ins, registered kinds, files."""
    kinds = {kind.usage: kind.description for kind in TRIGGER_KINDS.items().values()}
    return {**builtin_trigger_names(), **kinds, **FILE_TRIGGERS}


register_trigger_kind(CTRL_KIND, load_ctrl_trigger, CTRL_USAGE, CTRL_DESCRIPTION)
