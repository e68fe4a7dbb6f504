"""`folder:` (ImageFolder) and `npz:` (BadEncoder release arrays) specs, on tiny files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoder_clean.data.specs import load_data
from encoder_clean.errors import UserError


# ----------------------------------------------------------------------------- folder
def _solid(path: Path, colour, size=(20, 20), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def _write_folder(root: Path) -> None:
    _solid(root / "train" / "dog" / "a.png", (0, 0, 255))
    _solid(root / "train" / "dog" / "nested" / "b.JPG", (0, 0, 255), size=(40, 30))
    _solid(root / "train" / "cat" / "c.bmp", (255, 0, 0), size=(17, 23))
    _solid(root / "train" / "cat" / "d.png", 128, mode="L")  # grayscale becomes RGB
    _solid(root / "train" / "ant" / "e.webp", (0, 255, 0))
    (root / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    _solid(root / "test" / "cat" / "f.ppm", (255, 0, 0))
    _solid(root / "test" / "dog" / "g.jpeg", (0, 0, 255), size=(64, 48))


def test_folder(tmp_path):
    _write_folder(tmp_path)
    dataset = load_data(f"folder:{tmp_path}")
    assert dataset.class_names == ["ant", "cat", "dog"] and dataset.num_classes == 3
    assert dataset.train.images.shape == (5, 3, 32, 32) and dataset.train.images.dtype == torch.uint8
    assert dataset.train.labels.tolist() == [0, 1, 1, 2, 2]
    assert dataset.test.labels.tolist() == [1, 2]
    assert dataset.train.images[0, :, 5, 5].tolist() == [0, 255, 0]
    assert dataset.train.images[2, :, 5, 5].tolist() == [128, 128, 128]
    assert dataset.test.images[0, :, 16, 16].tolist() == [255, 0, 0]
    blue = dataset.test.images[1, :, 16, 16].tolist()  # JPEG: close, not exact
    assert blue[2] > 240 and max(blue[:2]) < 15
    assert load_data(f"folder:{tmp_path}?size=8").train.images.shape == (5, 3, 8, 8)


def test_folder_centre_crop(tmp_path):
    # 64 x 32: red left quarter, green middle half, blue right quarter; the centre square is all green.
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :16] = (255, 0, 0)
    array[:, 16:48] = (0, 255, 0)
    array[:, 48:] = (0, 0, 255)
    for split in ("train", "test"):
        (tmp_path / split / "x").mkdir(parents=True)
        Image.fromarray(array).save(tmp_path / split / "x" / "wide.png")
        Image.fromarray(array.transpose(1, 0, 2).copy()).save(tmp_path / split / "x" / "tall.png")
    dataset = load_data(f"folder:{tmp_path}?size=16")
    assert dataset.train.images.shape == (2, 3, 16, 16)
    for image in dataset.train.images:
        inner = image[:, 2:14, 2:14]  # the rim blends with what lay just outside, as antialiasing should
        assert bool((inner[1] == 255).all()) and int(inner[0].max()) == 0 and int(inner[2].max()) == 0
    wide, tall = dataset.train.images
    assert int(wide[0, 8, 0]) < 64 and int(wide[2, 8, 15]) < 64  # little of the cut-off quarters
    assert int(tall[0, 0, 8]) < 64 and int(tall[2, 15, 8]) < 64


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="train folder .* is missing"):
        load_data(f"folder:{tmp_path}")
    _write_folder(tmp_path)
    with pytest.raises(UserError, match="unknown option"):
        load_data(f"folder:{tmp_path}?crop=1")
    with pytest.raises(UserError, match="size=2 must be in"):
        load_data(f"folder:{tmp_path}?size=2")

    _solid(tmp_path / "test" / "eel" / "h.png", (1, 2, 3))
    with pytest.raises(UserError, match="eel under .* not in"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "test" / "eel" / "h.png").unlink()
    (tmp_path / "test" / "eel").rmdir()

    bad = tmp_path / "train" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.png"):
        load_data(f"folder:{tmp_path}")
    bad.unlink()

    for image in (tmp_path / "test").rglob("*.*"):
        image.unlink()
    with pytest.raises(UserError, match="no images .* under .*test"):
        load_data(f"folder:{tmp_path}")


# ----------------------------------------------------------------------------- npz
def _arrays(count: int, seed: int, size: int = 8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), rng.integers(0, 4, count)


def test_npz_directory(tmp_path):
    x_train, y_train = _arrays(6, 0)
    x_test, y_test = _arrays(3, 1)
    y_train[0] = 6  # the largest label sets the number of classes
    np.savez(tmp_path / "train.npz", x=x_train, y=y_train.astype(np.int64))
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test.astype(np.uint8)[:, None])  # (N, 1) is fine too
    dataset = load_data(f"npz:{tmp_path}")
    assert dataset.train.images.shape == (6, 3, 8, 8) and dataset.train.images.dtype == torch.uint8
    assert dataset.train.labels.dtype == torch.int64
    assert dataset.train.labels.tolist() == y_train.tolist()
    assert dataset.test.labels.tolist() == y_test.tolist()
    assert dataset.num_classes == 7
    assert int(dataset.train.images[4, 2, 1, 6]) == int(x_train[4, 1, 6, 2])  # NHWC -> NCHW
    assert np.array_equal(dataset.test.images.permute(0, 2, 3, 1).numpy(), x_test)


def test_npz_single_file_and_grayscale(tmp_path):
    x_train, y_train = _arrays(5, 2)
    x_test, y_test = _arrays(2, 3)
    path = tmp_path / "all.npz"
    np.savez_compressed(path, x_train=x_train[..., 0], y_train=y_train, x_test=x_test[..., :1], y_test=y_test)
    dataset = load_data(f"npz:{path}")
    assert dataset.train.images.shape == (5, 3, 8, 8) and dataset.test.images.shape == (2, 3, 8, 8)
    for split, x in ((dataset.train, x_train), (dataset.test, x_test)):
        for channel in range(3):
            assert np.array_equal(split.images[:, channel].numpy(), x[..., 0])
    assert dataset.num_classes == int(max(y_train.max(), y_test.max())) + 1


def test_npz_errors(tmp_path):
    x, y = _arrays(4, 0)
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"npz:{tmp_path / 'nowhere.npz'}")
    with pytest.raises(UserError, match="train.npz is missing"):
        load_data(f"npz:{tmp_path}")

    lone = tmp_path / "lone.npz"
    np.savez(lone, x=x, y=y)
    with pytest.raises(UserError, match="lacks array.*x_train.*has: x, y"):
        load_data(f"npz:{lone}")
    with pytest.raises(UserError, match="unknown option"):
        load_data(f"npz:{lone}?size=32")

    def check(match: str, **arrays) -> None:
        path = tmp_path / "case.npz"
        np.savez(path, **{"x_train": x, "y_train": y, "x_test": x, "y_test": y, **arrays})
        with pytest.raises(UserError, match=match):
            load_data(f"npz:{path}")

    check("images must be uint8, got float32", x_train=x.astype(np.float32))
    check(r"must be NHWC .* got shape \(4, 3, 8, 8\)", x_test=x.transpose(0, 3, 1, 2))
    check(r"labels must be integers, got float64", y_train=y.astype(np.float64))
    check(r"labels must have shape \(4,\) or \(4, 1\)", y_test=y[:3])
    check("must not be negative", y_test=-y - 1)
    check("split is empty", x_train=x[:0], y_train=y[:0])
    check("differ in shape", x_test=_arrays(4, 1, size=6)[0])

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x_train=np.array([object()], dtype=object), y_train=y, x_test=x, y_test=y)
    with pytest.raises(UserError, match="pickled.npz"):
        load_data(f"npz:{pickled}")

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is no zip archive")
    with pytest.raises(UserError, match="garbage.npz is not an .npz"):
        load_data(f"npz:{garbage}")

    good = tmp_path / "good.npz"
    np.savez(good, x_train=x, y_train=y, x_test=x, y_test=y)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(UserError, match="truncated.npz"):
        load_data(f"npz:{truncated}")

    single = tmp_path / "single.npy"
    np.save(single, x)
    with pytest.raises(UserError, match="single .npy array"):
        load_data(f"npz:{single}")
