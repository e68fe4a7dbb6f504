"""Hostile inputs for every loader: valid seed files, mutations of them, and how to judge an outcome.

A `Case` writes one input (a file or a folder) and names the loader that reads it. `run_case` reads it
the way the CLI does, in this process, under a time limit and an address-space limit, and sorts the
outcome: "ok" (read, and the result is sound), "rejected" (one UserError line), or a failure: "traceback"
(any other exception), "bad-message" (a UserError that is empty or spans lines), "unsound" (read, but the
result is not usable), "hang", "memory", "code-executed" (a payload ran). The default suite and
benchmarks/robustness.py both draw cases from here, with different counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import resource
import signal
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from encoder_clean.data.specs import load_data
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import load_encoder, save_encoder
from encoder_clean.errors import UserError
from encoder_clean.training.checkpoints import Interval, Journal, load_checkpoint
from encoder_clean.triggers import load_trigger

ARCH = "resnet10-cifar-w8"
FAILURES = ("traceback", "bad-message", "unsound", "hang", "memory", "code-executed")
MARKER_NAME = "PAYLOAD_RAN"


# ------------------------------------------------------------------------------ loaders, as the CLI reads
def _read_encoder(path: str) -> None:
    encoder = load_encoder(path).encoder.eval()
    with torch.no_grad():
        features = encoder.features(torch.rand(2, 3, encoder.image_size, encoder.image_size))
    if features.shape != (2, encoder.feature_dim) or not bool(torch.isfinite(features).all()):
        raise AssertionError(f"unsound encoder: features {tuple(features.shape)}")


def _read_dataset(spec: str) -> None:
    dataset = load_data(spec)
    for split in (dataset.train, dataset.test):
        images, labels = split.images, split.labels
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or len(images) != len(labels):
            raise AssertionError(f"unsound split: {images.dtype} {tuple(images.shape)} / {len(labels)} labels")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < dataset.num_classes:
            raise AssertionError("unsound labels")


def _read_trigger(spec: str) -> None:
    trigger = load_trigger(spec, 32)
    stamped = trigger.stamp(torch.rand(2, 3, 32, 32))
    if stamped.shape != (2, 3, 32, 32) or not bool(torch.isfinite(stamped).all()):
        raise AssertionError("unsound trigger")


def _read_resume(path: str) -> None:
    load_checkpoint(Path(path), "identity")


LOADERS: dict[str, Callable[[str], None]] = {
    "safetensors": _read_encoder, "pt": _read_encoder, "npz": lambda p: _read_dataset(f"npz:{p}"),
    "folder": lambda p: _read_dataset(f"folder:{p}"), "png-trigger": _read_trigger, "npz-trigger": _read_trigger,
    "resume": _read_resume,
}


@dataclass
class Case:
    loader: str
    name: str
    write: Callable[[Path], str]  # writes the input under a folder, returns what the loader is given


# ------------------------------------------------------------------------------ valid seed inputs
def encoder_bytes(kind: str) -> bytes:
    """A valid tiny encoder checkpoint as safetensors or as a torch-saved state dict."""
    torch.manual_seed(0)
    encoder = create_encoder(ARCH)
    if kind == "pt":
        buffer = io.BytesIO()
        torch.save({k: v.clone() for k, v in encoder.state_dict().items()}, buffer)
        return buffer.getvalue()
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "e.safetensors"
        save_encoder(encoder, path, produced_by="fuzz seed")
        return path.read_bytes()


def npz_bytes(x: np.ndarray, y: np.ndarray, split: bool = True) -> bytes:
    buffer = io.BytesIO()
    if split:
        np.savez(buffer, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    else:
        np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def valid_npz(rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    n = 8
    x = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return x, np.arange(n, dtype=np.int64) % 2


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def valid_trigger_png() -> bytes:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[22:30, 22:30] = 255
    return png_bytes(rgba)


def valid_trigger_npz() -> bytes:
    t = np.zeros((32, 32, 3), dtype=np.float32)
    tm = np.ones((32, 32, 3), dtype=np.float32)
    t[22:30, 22:30], tm[22:30, 22:30] = 255, 0
    buffer = io.BytesIO()
    np.savez(buffer, t=t, tm=tm)
    return buffer.getvalue()


def valid_resume_bytes(tmp: Path) -> bytes:
    journal = Journal(tmp / "seed.resume.pt", Interval(), "identity", resume=False)
    weight = torch.nn.Linear(3, 2)
    journal.save_current(_FakePhase(weight), 3, [{"step": 3.0, "loss": 1.0}])
    return (tmp / "seed.resume.pt").read_bytes()


@dataclass
class _FakePhase:
    module: torch.nn.Module
    index: int = 0
    description: str = "seed"
    total: int = 10

    @property
    def state(self) -> dict[str, object]:
        return {"model": self.module, "generator": torch.Generator().manual_seed(0)}


# ------------------------------------------------------------------------------ byte-level mutations
def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 2, 8, 64))):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def overwrite_range(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    start = rng.randrange(len(out))
    length = min(len(out) - start, rng.choice((4, 16, 256, 4096)))
    out[start:start + length] = bytes(rng.randrange(256) for _ in range(length))
    return bytes(out)


def insert_bytes(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.choice((1, 7, 100)))) + data[at:]


BYTE_MUTATIONS = {"truncate": truncate, "flip": flip_bytes, "overwrite": overwrite_range, "insert": insert_bytes}


def byte_cases(loader: str, suffix: str, seed_data: Callable[[], bytes], count: int, rng: random.Random,
               as_dir: str | None = None) -> Iterator[Case]:
    """`count` byte-level mutations of a valid input (`as_dir`: the file goes inside a folder of that name)."""
    data = seed_data()
    for index in range(count):
        name = rng.choice(sorted(BYTE_MUTATIONS))
        mutated = BYTE_MUTATIONS[name](data, rng) if data else b""
        yield Case(loader, f"{name}#{index}", _file_writer(mutated, suffix, as_dir))


def _file_writer(data: bytes, suffix: str, as_dir: str | None = None) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        if as_dir:
            (folder / as_dir).mkdir(exist_ok=True)
            (folder / as_dir / suffix).write_bytes(data)
            return str(folder / as_dir)
        path = folder / f"input{suffix}"
        path.write_bytes(data)
        return str(path)
    return write


# ------------------------------------------------------------------------------ safetensors structure
def safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def safetensors_join(header: dict | bytes, body: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def safetensors_cases(rng: random.Random) -> Iterator[Case]:
    data = encoder_bytes("safetensors")
    header, body = safetensors_parts(data)
    names = [k for k in header if k != "__metadata__"]
    raw_length = len(json.dumps(header).encode())

    def header_edit(label: str, edit: Callable[[dict], None]) -> Case:
        changed = json.loads(json.dumps(header))
        edit(changed)
        return Case("safetensors", label, _file_writer(safetensors_join(changed, body), ".safetensors"))

    for length in (0, 1, raw_length - 1, raw_length + 1, len(data), 2**31, 2**63 - 1, 2**64 - 1):
        yield Case("safetensors", f"header-length={length}",
                   _file_writer(safetensors_join(json.dumps(header).encode(), body, length), ".safetensors"))
    for text in (b"", b"{", b"[]", b"null", b'"x"', b"{\"a\": 1}", b"\xff\xfe", b"{" * 10000):
        yield Case("safetensors", f"header={text[:12]!r}", _file_writer(safetensors_join(text, body), ".safetensors"))
    for dtype in ("F64", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8_E4M3", "XYZ", ""):
        name = rng.choice(names)
        yield header_edit(f"dtype {name}={dtype}", lambda h, n=name, d=dtype: h[n].__setitem__("dtype", d))
    for shape in ([], [0], [-1], [2**40], [1, 2, 3, 4, 5, 6], ["a"], None):
        name = rng.choice(names)
        yield header_edit(f"shape {name}={shape}", lambda h, n=name, s=shape: h[n].__setitem__("shape", s))
    for offsets in ([0, 0], [0, 2**62], [-4, 4], [8, 4], [0, len(body) + 1], "x"):
        name = rng.choice(names)
        yield header_edit(f"offsets {name}={offsets}", lambda h, n=name, o=offsets: h[n].__setitem__("data_offsets", o))
    yield header_edit("tensor dropped", lambda h: h.pop(rng.choice(names)))
    yield header_edit("tensor renamed", lambda h: h.__setitem__("extra.weight", h.pop(rng.choice(names))))
    metadata_edits = {
        "arch": ["resnet50", "no-such-arch", "", "../../etc/passwd"], "image_size": ["abc", "-5", "0", "100000", "3.5"],
        "mean": ["[1, 2]", "x", "[\"a\", 1, 2]", "[1e400, 0, 0]"], "std": ["[0, 0, 0]", "[-1, 1, 1]", "[]"],
        "format_version": ["999", "x"], "settings": ["{", "[]", "null"], "feature_dim": ["-1", "x"],
    }
    for key, values in metadata_edits.items():
        for value in values:
            yield header_edit(f"metadata {key}={value}", lambda h, k=key, v=value: h["__metadata__"].__setitem__(k, v))
    yield header_edit("metadata not strings", lambda h: h.__setitem__("__metadata__", {"arch": 5}))
    yield header_edit("metadata removed", lambda h: h.pop("__metadata__"))
    for value in (float("nan"), float("inf"), float("-inf"), 1e38):
        yield Case("safetensors", f"weights={value}", _weights_writer(value, rng, "safetensors"))
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int32):
        yield Case("safetensors", f"all weights {dtype}", _cast_writer(dtype))


def _weights_writer(value: float, rng: random.Random, kind: str) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        torch.manual_seed(0)
        state = {k: v.clone() for k, v in create_encoder(ARCH).state_dict().items()}
        name = rng.choice([k for k, v in state.items() if v.is_floating_point()])
        state[name].view(-1)[0] = value
        path = folder / f"input.{kind}"
        if kind == "pt":
            torch.save(state, path)
        else:
            save_file(state, str(path), metadata={"arch": ARCH})
        return str(path)
    return write


def _cast_writer(dtype: torch.dtype) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        torch.manual_seed(0)
        state = {k: v.to(dtype) for k, v in create_encoder(ARCH).state_dict().items()}
        path = folder / "input.safetensors"
        save_file(state, str(path), metadata={"arch": ARCH})
        return str(path)
    return write


# ------------------------------------------------------------------------------ pickles (.pt)
class _Payload:
    """Unpickling this would run a shell command that creates the marker file."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "eval":
            return eval, (f"open({str(self.marker)!r}, 'w').close()",)
        import subprocess
        return subprocess.call, (["touch", str(self.marker)],)


def pickle_cases(rng: random.Random) -> Iterator[Case]:
    for how in ("system", "eval", "subprocess"):
        for protocol in (0, 2, 4, 5):
            def raw(folder: Path, how=how, protocol=protocol) -> str:
                path = folder / "input.pt"
                path.write_bytes(pickle.dumps({"state_dict": _Payload(folder.parent / MARKER_NAME, how)}, protocol))
                return str(path)
            yield Case("pt", f"payload {how} protocol {protocol}", raw)

        def zipped(folder: Path, how=how) -> str:  # the payload inside torch.save's zip layout
            path = folder / "input.pt"
            torch.save({"w": torch.ones(1)}, path)
            _replace_zip_pickle(path, pickle.dumps(_Payload(folder.parent / MARKER_NAME, how), 2))
            return str(path)
        yield Case("pt", f"payload {how} in torch zip", zipped)
    for label, obj in (("list", [torch.ones(2)]), ("int", 5), ("string", "weights"), ("none", None),
                       ("dict of strings", {"a": "b"}), ("nested empty", {"state_dict": {}}),
                       ("wrong shapes", {"conv1.weight": torch.ones(1)}), ("int keys", {1: torch.ones(1)}),
                       ("huge tensor meta", {"x": torch.empty(0)})):
        yield Case("pt", f"object {label}", _torch_save_writer(obj))
    for value in (float("nan"), float("inf")):
        yield Case("pt", f"weights={value}", _weights_writer(value, rng, "pt"))


def _torch_save_writer(obj: object) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        path = folder / "input.pt"
        torch.save(obj, path)
        return str(path)
    return write


def _replace_zip_pickle(path: Path, payload: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, payload if name.endswith("data.pkl") else content)


# ------------------------------------------------------------------------------ npz datasets
def npz_cases(rng: random.Random) -> Iterator[Case]:
    x, y = valid_npz(rng)
    variants: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "float images": (x.astype(np.float32), y), "int16 images": (x.astype(np.int16), y),
        "NCHW": (np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y), "4 channels": (np.concatenate([x, x[..., :1]], 3), y),
        "2-D images": (x[:, :, :, 0].reshape(len(x), -1), y), "5-D images": (x[None], y),
        "1x1 images": (x[:, :1, :1], y), "0x0 images": (x[:, :0, :0], y), "empty": (x[:0], y[:0]),
        "one class": (x, np.zeros_like(y)), "float labels": (x, y.astype(np.float32)),
        "negative labels": (x, y - 5), "huge labels": (x, y + 2**40), "labels too few": (x, y[:3]),
        "labels 2-D": (x, np.stack([y, y], 1)), "bool labels": (x, y.astype(bool)),
        "object labels": (x, y.astype(object)), "string labels": (x, y.astype(str)),
        "grayscale": (x[..., 0], y), "odd size 7x5": (x[:, :7, :5], y),
    }
    for label, (images, labels) in variants.items():
        yield Case("npz", label, _npz_writer(images, labels))
    yield Case("npz", "missing keys", _raw_npz_writer(lambda b: np.savez(b, a=x)))
    yield Case("npz", "single npy", _npy_writer(x))
    yield Case("npz", "header claims a huge array", _lying_npy_writer(x, y))
    yield Case("npz", "train/test split folder without test", _split_dir_writer(x, y, with_test=False))
    yield Case("npz", "train/test split folder", _split_dir_writer(x, y, with_test=True))


def _npz_writer(images: np.ndarray, labels: np.ndarray) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        path = folder / "input.npz"
        try:
            data = npz_bytes(images, labels)
        except ValueError:
            data = b""
        path.write_bytes(data)
        return str(path)
    return write


def _raw_npz_writer(save: Callable[[io.BytesIO], None]) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        buffer = io.BytesIO()
        save(buffer)
        (folder / "input.npz").write_bytes(buffer.getvalue())
        return str(folder / "input.npz")
    return write


def _npy_writer(x: np.ndarray) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        buffer = io.BytesIO()
        np.save(buffer, x)
        (folder / "input.npz").write_bytes(buffer.getvalue())
        return str(folder / "input.npz")
    return write


def _lying_npy_writer(x: np.ndarray, y: np.ndarray) -> Callable[[Path], str]:
    """An .npz whose x_train member claims 10^9 images but holds 8: a reader must not allocate for the claim."""
    def write(folder: Path) -> str:
        path = folder / "input.npz"
        path.write_bytes(npz_bytes(x, y))
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        npy = members["x_train.npy"]
        header_end = npy.index(b"\n") + 1
        header = npy[:header_end].replace(f"({len(x)},".encode(), b"(1000000000,")
        members["x_train.npy"] = header + npy[header_end:]
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        return str(path)
    return write


def _split_dir_writer(x: np.ndarray, y: np.ndarray, with_test: bool) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        root = folder / "npzdir"
        root.mkdir()
        (root / "train.npz").write_bytes(npz_bytes(x, y, split=False))
        if with_test:
            (root / "test.npz").write_bytes(npz_bytes(x[:2], y[:2], split=False))
        return str(root)
    return write


# ------------------------------------------------------------------------------ image folders
def folder_cases(rng: random.Random) -> Iterator[Case]:
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    good = png_bytes(image)
    layouts: dict[str, dict[str, bytes | None]] = {
        "valid": {"train/a/1.png": good, "train/b/1.png": good, "test/a/1.png": good},
        "one class": {"train/a/1.png": good, "test/a/1.png": good},
        "empty train": {"train/": None, "test/a/1.png": good},
        "class folders empty": {"train/a/": None, "test/a/": None},
        "no test": {"train/a/1.png": good},
        "unknown test class": {"train/a/1.png": good, "test/z/1.png": good},
        "zero-byte image": {"train/a/1.png": b"", "test/a/1.png": good},
        "text as png": {"train/a/1.png": b"hello", "test/a/1.png": good},
        "truncated png": {"train/a/1.png": good[:40], "test/a/1.png": good},
        "flipped png": {"train/a/1.png": flip_bytes(good, rng), "test/a/1.png": good},
        "1x1 image": {"train/a/1.png": png_bytes(image[:1, :1]), "test/a/1.png": good},
        "16-bit image": {"train/a/1.png": png_bytes(np.full((9, 9), 4000, dtype=np.uint16)), "test/a/1.png": good},
        "palette and alpha": {"train/a/1.png": png_bytes(np.zeros((9, 9, 4), np.uint8)),
                              "train/a/2.png": _palette_png(), "test/a/1.png": good},
        "decompression bomb": {"train/a/1.png": _bomb_png(), "test/a/1.png": good},
        "nested deep": {"train/a/x/y/z/1.png": good, "test/a/1.png": good},
        "non-images only": {"train/a/readme.txt": b"x", "test/a/1.png": good},
    }
    for label, files in layouts.items():
        yield Case("folder", label, _tree_writer(files))
    yield Case("folder", "symlink loop", _symlink_loop_writer(good))


def _tree_writer(files: dict[str, bytes | None]) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        root = folder / "images"
        root.mkdir()
        for relative, content in files.items():
            path = root / relative
            if content is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        return str(root)
    return write


def _symlink_loop_writer(good: bytes) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        root = Path(_tree_writer({"train/a/1.png": good, "test/a/1.png": good})(folder))
        (root / "train/a/loop").symlink_to(root / "train/a", target_is_directory=True)
        return str(root)
    return write


def _palette_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (9, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    """A small file that declares a 40000 x 40000 image (1.6 G pixels)."""
    buffer = io.BytesIO()
    Image.new("1", (40000, 40000)).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------ triggers
def trigger_cases(rng: random.Random) -> Iterator[Case]:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[20:30, 20:30] = 255
    pngs = {
        "no alpha": png_bytes(rgba[..., :3]), "grayscale": png_bytes(rgba[..., 0]),
        "gray+alpha": png_bytes(rgba[..., [0, 3]], mode="LA"), "alpha all zero": png_bytes(np.zeros((32, 32, 4), np.uint8)),
        "larger than image": png_bytes(np.zeros((64, 64, 4), np.uint8)), "1x1": png_bytes(rgba[:1, :1]),
        "16-bit": png_bytes(np.full((8, 8), 4000, dtype=np.uint16)), "palette": _palette_png(),
        "bomb": _bomb_png(), "not a png": b"GIF89a" + bytes(30), "empty": b"",
    }
    for label, data in pngs.items():
        yield Case("png-trigger", label, _file_writer(data, ".png"))
    for position in ("@-1,0", "@40,40", "@a,b", "@0", "@30,30", "@999999999999,0"):
        yield Case("png-trigger", f"small png {position}", _positioned_writer(png_bytes(rgba[20:30, 20:30]), position))
    arrays = {
        "nan pattern": {"t": np.full((32, 32, 3), np.nan, np.float32), "tm": np.ones((32, 32, 3), np.float32)},
        "wrong shape": {"t": np.zeros((5, 5), np.float32), "tm": np.zeros((5, 5), np.float32)},
        "mismatched": {"t": np.zeros((32, 32, 3), np.float32), "tm": np.zeros((16, 16, 3), np.float32)},
        "missing tm": {"t": np.zeros((32, 32, 3), np.float32)},
        "strings": {"t": np.array(["a"]), "tm": np.array(["b"])},
        "mask out of range": {"t": np.zeros((32, 32, 3), np.float32), "tm": np.full((32, 32, 3), 7, np.float32)},
        "batch dim": {"t": np.zeros((1, 32, 32, 3), np.float32), "tm": np.ones((1, 32, 32, 3), np.float32)},
        "CHW 224": {"t": np.zeros((3, 224, 224), np.float32), "tm": np.ones((3, 224, 224), np.float32)},
    }
    for label, members in arrays.items():
        yield Case("npz-trigger", label, _raw_npz_writer(lambda b, m=members: np.savez(b, **m)))


def _positioned_writer(data: bytes, position: str) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        (folder / "input.png").write_bytes(data)
        return str(folder / "input.png") + position
    return write


# ------------------------------------------------------------------------------ all of them
def structured_cases(rng: random.Random) -> list[Case]:
    return [*safetensors_cases(rng), *pickle_cases(rng), *npz_cases(rng), *folder_cases(rng), *trigger_cases(rng)]


def mutation_cases(rng: random.Random, per_loader: int, scratch: Path) -> list[Case]:
    """Byte-level mutations of each loader's valid seed input (`scratch`: a folder for making them)."""
    scratch.mkdir(parents=True, exist_ok=True)
    x, y = valid_npz(rng)
    seeds: list[tuple[str, str, Callable[[], bytes], str | None]] = [
        ("safetensors", ".safetensors", lambda: encoder_bytes("safetensors"), None),
        ("pt", ".pt", lambda: encoder_bytes("pt"), None),
        ("npz", ".npz", lambda: npz_bytes(x, y), None),
        ("npz", "train.npz", lambda: npz_bytes(x, y, split=False), "npzdir"),
        ("png-trigger", ".png", valid_trigger_png, None),
        ("npz-trigger", ".npz", valid_trigger_npz, None),
        ("resume", ".resume.pt", lambda: valid_resume_bytes(scratch), None),
    ]
    cases: list[Case] = []
    for loader, suffix, seed, as_dir in seeds:
        cases.extend(byte_cases(loader, suffix, seed, per_loader, rng, as_dir))
    return cases


# ------------------------------------------------------------------------------ hypothesis-drawn inputs
LOADER_SUFFIXES = {"safetensors": ".safetensors", "pt": ".pt", "npz": ".npz", "png-trigger": ".png",
                   "npz-trigger": ".npz", "resume": ".resume.pt"}


def bytes_case(loader: str, data: bytes) -> Case:
    return Case(loader, f"{len(data)} drawn bytes", _file_writer(data, LOADER_SUFFIXES[loader]))


def header_case(field: str, value: object, which: int, metadata: dict[str, str]) -> Case:
    """The valid encoder file with one tensor's `field` set to `value` and `metadata` merged in."""
    header, body = safetensors_parts(_seed_safetensors())
    names = [k for k in header if k != "__metadata__"]
    header[names[which % len(names)]][field] = value
    header["__metadata__"].update(metadata)
    try:
        data = safetensors_join(header, body)
    except ValueError:  # a value json cannot write (e.g. NaN is written, but surrogates are not)
        data = safetensors_join(json.dumps(header, ensure_ascii=True).encode(), body)
    return Case("safetensors", f"{field}={value!r:.40}", _file_writer(data, ".safetensors"))


def npz_case(x: np.ndarray, y: np.ndarray) -> Case:
    return Case("npz", f"x {x.dtype}{x.shape} y {y.dtype}{y.shape}",
                _raw_npz_writer(lambda b: np.savez(b, x_train=x, y_train=y, x_test=x, y_test=y)))


_SEED_CACHE: dict[str, bytes] = {}


def _seed_safetensors() -> bytes:
    if "safetensors" not in _SEED_CACHE:
        _SEED_CACHE["safetensors"] = encoder_bytes("safetensors")
    return _SEED_CACHE["safetensors"]


def hypothesis_strategies():
    """name -> (strategy of keyword arguments, case builder): what the fuzz tests and the benchmark draw."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=8)
    metadata = st.dictionaries(st.sampled_from(["arch", "image_size", "mean", "std", "settings", "format_version"]),
                               st.text(max_size=12), max_size=3)
    image_dtypes = st.sampled_from([np.uint8, np.int8, np.float32, np.float16, np.int64, np.bool_])
    label_dtypes = st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.bool_])
    return {
        "bytes": (st.fixed_dictionaries({"loader": st.sampled_from(sorted(LOADER_SUFFIXES)),
                                         "data": st.binary(max_size=2048)}), bytes_case),
        "safetensors-header": (st.fixed_dictionaries({
            "field": st.sampled_from(["dtype", "shape", "data_offsets", "extra"]), "value": json_values,
            "which": st.integers(0, 10**6), "metadata": metadata}), header_case),
        "npz-arrays": (st.fixed_dictionaries({
            "x": hnp.arrays(image_dtypes, hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6)),
            "y": hnp.arrays(label_dtypes, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=8))}),
            npz_case),
    }


# ------------------------------------------------------------------------------ judging one case
class _Timeout(BaseException):
    pass


@contextlib.contextmanager
def limits(seconds: int, extra_address_space: int) -> Iterator[None]:
    """SIGALRM after `seconds`; at most `extra_address_space` more bytes of virtual memory meanwhile."""
    def alarm(*_):
        raise _Timeout
    previous = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    cap = used + extra_address_space
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def run_case(case: Case, folder: Path, seconds: int = 60, extra_address_space: int = 4 << 30) -> tuple[str, str]:
    """(outcome, detail) of reading `case` from inside `folder` (a fresh empty folder)."""
    marker = folder.parent / MARKER_NAME
    marker.unlink(missing_ok=True)
    argument = case.write(folder)
    outcome, detail = "ok", ""
    try:
        with limits(seconds, extra_address_space):
            LOADERS[case.loader](argument)
    except UserError as error:
        message = str(error)
        outcome, detail = ("rejected" if message.strip() and "\n" not in message else "bad-message"), message
    except AssertionError as error:
        outcome, detail = "unsound", str(error)
    except _Timeout:
        outcome, detail = "hang", f"over {seconds} s"
    except MemoryError:
        outcome, detail = "memory", "MemoryError"
    except Exception as error:  # noqa: BLE001 - anything else would reach the user as a traceback
        outcome, detail = "traceback", f"{type(error).__name__}: {str(error)[:200]}"
    if marker.exists():
        outcome, detail = "code-executed", f"{MARKER_NAME} was created"
    return outcome, detail
