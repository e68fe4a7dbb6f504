"""The datasets the backdoor papers use, read from torchvision's on-disk layouts; nothing is downloaded.

- `cifar10:ROOT`: `ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}` (pickles) or
  `ROOT/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`; ROOT may also be the batches folder.
  The pickles go through an unpickler that can only rebuild numpy arrays, never run code.
- `stl10:ROOT[?size=N]`: `ROOT/stl10_binary/{train,test}_{X,y}.bin`, scaled from 96 px to N (32 by
  default, the size the BadEncoder line of work uses; `size=96` keeps them native).
- `gtsrb:ROOT[?size=N]`: `ROOT/gtsrb/GTSRB/Training/000NN/*.ppm` and `.../Final_Test/Images/*.ppm`
  with labels from `ROOT/gtsrb/GT-final_test.csv`; ROOT may also be the `gtsrb` folder. Images vary in
  size and are stretched to N x N (32).
- `svhn:ROOT`: `ROOT/{train,test}_32x32.mat`; label 10 is the digit 0.
"""

from __future__ import annotations

import csv
import importlib
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

from encoder_clean.data.dataset import Dataset, Split
from encoder_clean.data.files import read_images, require_root, spec_label, take_size
from encoder_clean.data.formats import register_format, reject_unknown
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.errors import UserError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
GTSRB_NUM_CLASSES = 43
CIFAR_PIXELS = 3 * 32 * 32
STL_PIXELS = 3 * 96 * 96
RESIZE_CHUNK = 256


# ----------------------------------------------------------------------------- restricted unpickling
class _Refused(pickle.UnpicklingError):
    pass


def _numpy_attr(submodule: str, name: str) -> Callable[[], Any]:
    """Resolve a numpy internal under its numpy 2 home first, so numpy 1 pickles load on numpy 2."""
    def resolve() -> Any:
        for prefix in ("numpy._core", "numpy.core"):
            try:
                return getattr(importlib.import_module(f"{prefix}.{submodule}"), name)
            except (ImportError, AttributeError):
                continue
        raise _Refused(f"numpy has no {submodule}.{name}")
    return resolve


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is let through.
    if encoding != "latin1" or not isinstance(text, str):
        raise _Refused("_codecs.encode is only allowed for latin1 text")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise _Refused(f"it refers to {module}.{name}, which a data file has no need for")
        return resolve()


def safe_unpickle(path: Path, fmt: str) -> Any:
    try:
        with open(path, "rb") as handle:
            # latin1 reads Python 2 pickles (the official CIFAR files) the way torchvision does.
            return _ArrayUnpickler(handle, encoding="latin1").load()
    except _Refused as exc:
        raise UserError(f"{fmt}: refusing to load {path}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{fmt}: cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a corrupt pickle can fail in many ways (EOFError, ValueError, ...)
        raise UserError(f"{fmt}: {path} is not a readable pickle ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------- cifar10
def _find_cifar(root: Path) -> tuple[Path, bool]:
    """The batches folder and whether it is the binary version."""
    for folder, binary in ((root / "cifar-10-batches-py", False), (root / "cifar-10-batches-bin", True)):
        if folder.is_dir():
            return folder, binary
    if (root / "data_batch_1").is_file():
        return root, False
    if (root / "data_batch_1.bin").is_file():
        return root, True
    raise UserError(f"cifar10: no cifar-10-batches-py or cifar-10-batches-bin folder in {root}")


def _require_file(path: Path, fmt: str) -> Path:
    if not path.is_file():
        raise UserError(f"{fmt}: {path} is missing")
    return path


def _dict_entry(entry: dict, key: str) -> Any:
    # Python 2 pickles read with latin1 have str keys; ones written by Python 3 keep bytes keys.
    return entry.get(key.encode(), entry.get(key))


def _cifar_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = safe_unpickle(_require_file(path, "cifar10"), "cifar10")
    if not isinstance(entry, dict):
        raise UserError(f"cifar10: {path} holds a {type(entry).__name__}, not a CIFAR batch dict")
    data, labels = _dict_entry(entry, "data"), _dict_entry(entry, "labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(f"cifar10: {path} lacks the 'data' array or the 'labels' list")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise UserError(f"cifar10: 'data' in {path} must be uint8 (N, {CIFAR_PIXELS}), "
                        f"got {data.dtype} {data.shape}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(data),):
        raise UserError(f"cifar10: 'labels' in {path} must be {len(data)} integers, "
                        f"got {labels.dtype} {labels.shape}")
    return data, labels


def _cifar_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(_require_file(path, "cifar10"), dtype=np.uint8)
    record = 1 + CIFAR_PIXELS
    if raw.size == 0 or raw.size % record:
        raise UserError(f"cifar10: {path} is {raw.size} bytes, not a whole number of "
                        f"{record}-byte records (truncated?)")
    records = raw.reshape(-1, record)
    return records[:, 1:], records[:, 0]


def _cifar_split(folder: Path, names: list[str], binary: bool) -> Split:
    read = _cifar_binary_batch if binary else _cifar_pickle_batch
    suffix = ".bin" if binary else ""
    batches = [read(folder / f"{name}{suffix}") for name in names]
    data = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches]).astype(np.int64)
    if len(data) == 0:
        raise UserError(f"cifar10: {folder / (names[0] + suffix)} holds no images")
    if labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
        raise UserError(f"cifar10: labels in {folder} must be 0..9, found {labels.min()}..{labels.max()}")
    # Each row is the red plane, then green, then blue, each 32 rows of 32: already CHW order.
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return Split(images, torch.from_numpy(labels))


def load_cifar10(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = spec_label("cifar10", argument)
    reject_unknown(options, spec)
    folder, binary = _find_cifar(require_root("cifar10", argument))
    train = _cifar_split(folder, [f"data_batch_{i}" for i in range(1, 6)], binary)
    test = _cifar_split(folder, ["test_batch"], binary)
    return Dataset(spec, train, test, len(CIFAR10_CLASSES), list(CIFAR10_CLASSES))


# ----------------------------------------------------------------------------- stl10
def resize_images(images: torch.Tensor, size: int, chunk: int = RESIZE_CHUNK) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 NCHW images to size x size, a chunk at a time to bound memory."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        batch = images[start:start + chunk].float()
        scaled = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = scaled.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _stl_split(folder: Path, split: str, size: int) -> Split:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = np.fromfile(_require_file(x_path, "stl10"), dtype=np.uint8)
    if raw.size == 0 or raw.size % STL_PIXELS:
        raise UserError(f"stl10: {x_path} is {raw.size} bytes, not a whole number of 3x96x96 images "
                        f"(truncated?)")
    labels = np.fromfile(_require_file(y_path, "stl10"), dtype=np.uint8).astype(np.int64)
    count = raw.size // STL_PIXELS
    if labels.size != count:
        raise UserError(f"stl10: {y_path} has {labels.size} labels for {count} images in {x_path}")
    if labels.min() < 1 or labels.max() > len(STL10_CLASSES):
        raise UserError(f"stl10: labels in {y_path} must be 1..10, found {labels.min()}..{labels.max()}")
    # The files store each channel column-major, hence the swap of the last two axes.
    images = torch.from_numpy(raw.reshape(-1, 3, 96, 96)).transpose(2, 3).contiguous()
    return Split(resize_images(images, size), torch.from_numpy(labels - 1))


def _find_stl(root: Path) -> Path:
    if (root / "stl10_binary").is_dir():
        return root / "stl10_binary"
    if (root / "train_X.bin").is_file():
        return root
    raise UserError(f"stl10: no stl10_binary folder in {root}")


def load_stl10(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = spec_label("stl10", argument)
    size = take_size(options, spec)
    reject_unknown(options, spec)
    folder = _find_stl(require_root("stl10", argument))
    train, test = _stl_split(folder, "train", size), _stl_split(folder, "test", size)
    return Dataset(spec, train, test, len(STL10_CLASSES), list(STL10_CLASSES))


# ----------------------------------------------------------------------------- gtsrb
def _is_ppm(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".ppm"


def _gtsrb_train_files(train_dir: Path) -> tuple[list[Path], list[int]]:
    """(paths, labels) from the class folders 00000..00042; the folder number is the class."""
    paths: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        if not folder.name.isdigit() or int(folder.name) >= GTSRB_NUM_CLASSES:
            raise UserError(f"gtsrb: {folder} is not a class folder 00000..{GTSRB_NUM_CLASSES - 1:05d}")
        found = sorted(p for p in folder.iterdir() if _is_ppm(p))
        paths.extend(found)
        labels.extend([int(folder.name)] * len(found))
    if not paths:
        raise UserError(f"gtsrb: no .ppm images in the class folders under {train_dir}")
    return paths, labels


def _read_csv_rows(csv_path: Path) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=";", skipinitialspace=True)
            rows = list(reader)
            fields = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"gtsrb: cannot read {csv_path}: {exc}") from None
    if "Filename" not in fields or "ClassId" not in fields:
        raise UserError(f"gtsrb: {csv_path} needs the columns Filename and ClassId (semicolon-separated)")
    return rows


def _gtsrb_test_files(images_dir: Path, csv_path: Path) -> tuple[list[Path], list[int]]:
    """(paths, labels) in the order of GT-final_test.csv, as torchvision reads them."""
    paths: list[Path] = []
    labels: list[int] = []
    for line, row in enumerate(_read_csv_rows(_require_file(csv_path, "gtsrb")), start=2):
        name, class_id = (row.get("Filename") or "").strip(), (row.get("ClassId") or "").strip()
        if not name or Path(name).name != name or not class_id.isdigit():
            raise UserError(f"gtsrb: {csv_path} line {line}: bad Filename {name!r} or ClassId {class_id!r}")
        if int(class_id) >= GTSRB_NUM_CLASSES:
            raise UserError(f"gtsrb: {csv_path} line {line}: ClassId {class_id} is not below "
                            f"{GTSRB_NUM_CLASSES}")
        paths.append(_require_file(images_dir / name, "gtsrb"))
        labels.append(int(class_id))
    if not paths:
        raise UserError(f"gtsrb: {csv_path} lists no test images")
    return paths, labels


def _gtsrb_split(paths: list[Path], labels: list[int], size: int, progress: Progress, split: str) -> Split:
    images = read_images(paths, size, crop=False, progress=progress, description=f"reading GTSRB {split} images")
    return Split(images, torch.tensor(labels, dtype=torch.int64))


def load_gtsrb(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = spec_label("gtsrb", argument)
    size = take_size(options, spec)
    reject_unknown(options, spec)
    root = require_root("gtsrb", argument)
    base = root / "gtsrb" if (root / "gtsrb").is_dir() else root
    if not (base / "GTSRB").is_dir():
        raise UserError(f"gtsrb: no gtsrb/GTSRB folder in {root}")
    train_dir, test_dir = base / "GTSRB" / "Training", base / "GTSRB" / "Final_Test" / "Images"
    for folder in (train_dir, test_dir):
        if not folder.is_dir():
            raise UserError(f"gtsrb: {folder} is missing")
    train = _gtsrb_split(*_gtsrb_train_files(train_dir), size, progress, "train")
    test = _gtsrb_split(*_gtsrb_test_files(test_dir, base / "GT-final_test.csv"), size, progress, "test")
    return Dataset(spec, train, test, GTSRB_NUM_CLASSES, [str(i) for i in range(GTSRB_NUM_CLASSES)])


# ----------------------------------------------------------------------------- svhn
def _read_mat(path: Path) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(_require_file(path, "svhn"), variable_names=["X", "y"])
    except UserError:
        raise
    except Exception as exc:  # scipy raises many types for a corrupt or HDF5 (v7.3) file
        raise UserError(f"svhn: cannot read {path} as a MATLAB file ({type(exc).__name__}: {exc})") from None


def _svhn_split(path: Path) -> Split:
    mat = _read_mat(path)
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise UserError(f"svhn: {path} lacks the variables X and y")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or x.shape[3] == 0:
        raise UserError(f"svhn: X in {path} must be uint8 (H, W, 3, N) with N > 0, got {x.dtype} {x.shape}")
    if not np.issubdtype(y.dtype, np.number) or y.size != x.shape[3]:
        raise UserError(f"svhn: y in {path} must hold {x.shape[3]} numeric labels, got {y.dtype} {y.shape}")
    labels = y.reshape(-1).astype(np.int64)
    if np.any(labels != y.reshape(-1)) or labels.min() < 0 or labels.max() > 10:
        raise UserError(f"svhn: labels in {path} must be whole numbers 1..10 (10 is the digit 0)")
    labels[labels == 10] = 0
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (H, W, C, N) -> NCHW
    return Split(images, torch.from_numpy(labels))


def load_svhn(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = spec_label("svhn", argument)
    reject_unknown(options, spec)
    root = require_root("svhn", argument)
    train, test = _svhn_split(root / "train_32x32.mat"), _svhn_split(root / "test_32x32.mat")
    return Dataset(spec, train, test, 10, [str(i) for i in range(10)])


register_format("cifar10", load_cifar10, "cifar10:ROOT",
                "CIFAR-10 in torchvision's layout (cifar-10-batches-py or -bin under ROOT)",
                class_count=lambda argument, options: len(CIFAR10_CLASSES))
register_format("stl10", load_stl10, "stl10:ROOT[?size=N]",
                "STL-10 in torchvision's layout (ROOT/stl10_binary), resized to N x N (32)",
                class_count=lambda argument, options: len(STL10_CLASSES))
register_format("gtsrb", load_gtsrb, "gtsrb:ROOT[?size=N]",
                "GTSRB in torchvision's layout (ROOT/gtsrb/GTSRB), resized to N x N (32)",
                class_count=lambda argument, options: GTSRB_NUM_CLASSES)
register_format("svhn", load_svhn, "svhn:ROOT",
                "SVHN in torchvision's layout (ROOT/train_32x32.mat, ROOT/test_32x32.mat)",
                class_count=lambda argument, options: 10)
