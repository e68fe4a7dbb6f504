"""Datasets from plain files: `folder:ROOT` (ImageFolder layout) and `npz:PATH` (arrays).

`folder:ROOT[?size=N]` reads `ROOT/train/<class>/...` and `ROOT/test/<class>/...` (any depth below the
class folder; .png .jpg .jpeg .bmp .ppm .webp). Classes are the sorted folder names under `train/`; a
test class unknown to train is an error. Each image becomes RGB, its shorter side is scaled to N and
the centre N x N square kept (default 32).

`npz:PATH` takes, as the BadEncoder release ships them, either
- a directory holding `train.npz` and `test.npz`, each with arrays `x` and `y`, or
- one `.npz` file holding `x_train`, `y_train`, `x_test`, `y_test`.
A lone file with only `x`/`y` is refused rather than split at some guessed point. `x` is uint8 NHWC
(N, H, W, 3); grayscale (N, H, W) or (N, H, W, 1) is repeated to three channels. `y` is integer, (N,)
or (N, 1). The number of classes is the largest label + 1. Nothing is unpickled (`allow_pickle=False`).

The image decoding helpers here are shared with the torchvision layouts that store image files (GTSRB).
"""

from __future__ import annotations

import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from encoder_clean.data.dataset import Dataset, Split
from encoder_clean.data.formats import register_format, reject_unknown, take_int
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.errors import UserError, first_line

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"})
DEFAULT_SIZE = 32
MAX_SIZE = 1024


# ----------------------------------------------------------------------------- shared helpers
def spec_label(fmt: str, argument: str) -> str:
    return f"{fmt}:{argument}" if argument else fmt


def require_root(fmt: str, argument: str) -> Path:
    """The path a spec names, which must exist."""
    if not argument.strip():
        raise UserError(f"data format {fmt} needs a path: {fmt}:PATH")
    path = Path(argument.strip()).expanduser()
    if not path.exists():
        raise UserError(f"{fmt}: {path} does not exist")
    return path


def require_dir(fmt: str, path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{fmt}: {what} folder {path} is missing")
    return path


def take_size(options: dict[str, str], spec: str) -> int:
    return take_int(options, "size", DEFAULT_SIZE, spec, low=4, high=MAX_SIZE)


def read_image(path: Path, size: int, crop: bool) -> np.ndarray:
    """One image file as uint8 (size, size, 3).

    crop=True scales the shorter side to `size` and keeps the centre square (torchvision's Resize +
    CenterCrop, done in one resampling step); crop=False stretches the whole image to the square.
    """
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            box = _centre_square(img.size) if crop else None
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
            array = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, ValueError, ...)
        reason = first_line(exc, limit=10_000)
        raise UserError(f"cannot read image {path}: {reason}") from None
    return array


def _centre_square(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    width, height = image_size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def read_images(paths: Sequence[Path], size: int, crop: bool, progress: Progress = NULL_PROGRESS,
                description: str = "decoding images") -> torch.Tensor:
    """Decode image files into one uint8 (N, 3, size, size) tensor.

    Decoding is the one per-image loop that cannot be avoided; Pillow releases the GIL while decoding
    and resampling, so a thread pool spreads it over the cores. Order follows `paths`.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))

    def fill(index: int) -> None:
        out[index] = read_image(paths[index], size, crop)

    with ThreadPoolExecutor(max_workers=workers) as pool, progress.task(description, total=len(paths)) as advance:
        for done, _ in enumerate(pool.map(fill, range(len(paths))), 1):  # the first failure is raised here
            if done % 500 == 0 or done == len(paths):
                advance(500 if done % 500 == 0 else done % 500)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------- folder
def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())


def _folder_files(split_dir: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Image files below each class folder, sorted so that the order does not depend on the disk."""
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = sorted(p for p in (split_dir / name).rglob("*") if is_image_file(p))
        paths.extend(found)
        labels.extend([index] * len(found))
    return paths, labels


def _folder_split(split_dir: Path, classes: list[str], size: int, progress: Progress) -> Split:
    paths, labels = _folder_files(split_dir, classes)
    if not paths:
        raise UserError(f"folder: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found "
                        f"under {split_dir}")
    images = read_images(paths, size, crop=True, progress=progress, description=f"reading {split_dir.name}/ images")
    return Split(images, torch.tensor(labels, dtype=torch.int64))


def load_folder(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = spec_label("folder", argument)
    size = take_size(options, spec)
    reject_unknown(options, spec)
    root = require_root("folder", argument)
    train_dir = require_dir("folder", root / "train", "train")
    test_dir = require_dir("folder", root / "test", "test")
    classes = _class_folders(train_dir)
    if not classes:
        raise UserError(f"folder: no class folders under {train_dir}")
    unknown = sorted(set(_class_folders(test_dir)) - set(classes))
    if unknown:
        raise UserError(f"folder: class folder(s) {', '.join(unknown)} under {test_dir} are not in "
                        f"{train_dir}")
    train = _folder_split(train_dir, classes, size, progress)
    test = _folder_split(test_dir, classes, size, progress)
    return Dataset(spec, train, test, len(classes), classes)


# ----------------------------------------------------------------------------- npz
# zip and .npy parsing of a damaged file raises many types (BadZipFile, zlib.error, NotImplementedError for
# unknown compression, RuntimeError for encryption, struct.error, ...): all of them mean a bad file.
_NPZ_ERRORS = (Exception,)


def _check_zip_magic(head: bytes, path: Path) -> None:
    # Caught here because numpy's own message for a non-archive suggests unpickling it.
    if head.startswith(b"\x93NUMPY"):
        raise UserError(f"npz: {path} is a single .npy array, not an .npz archive")
    if not head.startswith(b"PK"):
        raise UserError(f"npz: {path} is not an .npz (zip) archive")


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_declared_sizes(handle, path: Path, keys: Sequence[str]) -> None:
    """Refuse members whose .npy header claims more data than the member holds, before numpy allocates
    room for the claim (a 100-byte file can declare a terabyte array)."""
    with zipfile.ZipFile(handle) as archive:
        for key in keys:
            try:
                info = archive.getinfo(f"{key}.npy")
            except KeyError:
                continue  # reported with the other missing arrays
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _NPY_HEADER_READERS:
                    raise UserError(f"npz: {path}: array {key} uses .npy format {version}, which is not supported")
                shape, _, dtype = _NPY_HEADER_READERS[version](member)
            if dtype.hasobject:
                raise UserError(f"npz: {path}: array {key} holds Python objects, which are never unpickled")
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size:
                raise UserError(f"npz: {path}: array {key} claims shape {shape} ({declared:,} bytes) but holds "
                                f"{info.file_size:,} bytes")


def _read_arrays(path: Path, keys: Sequence[str]) -> list[np.ndarray]:
    """The named arrays of one archive, read eagerly so that a corrupt member fails here.

    The file is opened here, not by numpy.load, so that it is closed even when the archive is corrupt.
    """
    if not path.is_file():
        raise UserError(f"npz: {path} is missing")
    try:
        with open(path, "rb") as handle:
            _check_zip_magic(handle.read(6), path)
            handle.seek(0)
            _check_declared_sizes(handle, path, keys)
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                missing = [key for key in keys if key not in archive.files]
                if missing:
                    raise UserError(f"npz: {path} lacks array(s) {', '.join(missing)} (has: "
                                    f"{', '.join(archive.files) or 'nothing'})")
                return [archive[key] for key in keys]
    except UserError:
        raise
    except _NPZ_ERRORS as exc:
        raise UserError(f"npz: cannot read {path}: {first_line(exc, 200)}") from None


def images_from_nhwc(x: np.ndarray, where: str) -> torch.Tensor:
    """uint8 NHWC (or grayscale NHW / NHW1) -> uint8 NCHW with three channels."""
    if x.dtype != np.uint8:
        raise UserError(f"{where}: images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"{where}: images must be NHWC (N, H, W, 3) or grayscale (N, H, W), "
                        f"got shape {x.shape}")
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    return images.expand(-1, 3, -1, -1).contiguous()


def labels_from_array(y: np.ndarray, count: int, where: str) -> torch.Tensor:
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: labels must be integers, got {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != count:
        raise UserError(f"{where}: labels must have shape ({count},) or ({count}, 1), got {y.shape}")
    labels = torch.from_numpy(y.astype(np.int64))
    if count and int(labels.min()) < 0:
        raise UserError(f"{where}: labels must not be negative")
    return labels


def _npz_split(x: np.ndarray, y: np.ndarray, where: str) -> Split:
    images = images_from_nhwc(x, where)
    if len(images) == 0:
        raise UserError(f"{where}: the split is empty")
    return Split(images, labels_from_array(y, len(images), where))


def load_npz(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = spec_label("npz", argument)
    reject_unknown(options, spec)
    path = require_root("npz", argument)
    if path.is_dir():
        train = _npz_split(*_read_arrays(path / "train.npz", ("x", "y")), where=f"npz: {path / 'train.npz'}")
        test = _npz_split(*_read_arrays(path / "test.npz", ("x", "y")), where=f"npz: {path / 'test.npz'}")
    else:
        x_train, y_train, x_test, y_test = _read_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
        train = _npz_split(x_train, y_train, f"npz: {path} (train)")
        test = _npz_split(x_test, y_test, f"npz: {path} (test)")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise UserError(f"npz: {path}: train images {tuple(train.images.shape[1:])} and test images "
                        f"{tuple(test.images.shape[1:])} differ in shape")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return Dataset(spec, train, test, num_classes)


def _folder_class_count(argument: str, options: dict[str, str]) -> int | None:
    train_dir = require_root("folder", argument) / "train"
    return len(_class_folders(train_dir)) if train_dir.is_dir() else None


def _npz_class_count(argument: str, options: dict[str, str]) -> int | None:
    """The largest label + 1, as load_npz counts, from the label arrays alone (numpy reads an npz's members
    one at a time, so the images stay unread)."""
    path = require_root("npz", argument)
    files = ([(path / "train.npz", "y"), (path / "test.npz", "y")] if path.is_dir()
             else [(path, "y_train"), (path, "y_test")])
    largest = -1
    for file, key in files:
        with np.load(file, allow_pickle=False) as arrays:
            largest = max(largest, int(arrays[key].max()))
    return largest + 1


register_format("folder", load_folder, "folder:ROOT[?size=N]",
                "ImageFolder layout ROOT/train/<class>/*, ROOT/test/<class>/*, resized to N x N (32)",
                class_count=_folder_class_count)
register_format("npz", load_npz, "npz:PATH",
                "a directory with train.npz and test.npz (x uint8 NHWC, y int), or one file with "
                "x_train, y_train, x_test, y_test", class_count=_npz_class_count)
