"""torchvision on-disk layouts, rebuilt in miniature in tmp_path: shapes, labels and pixel placement."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from encoder_clean.data.specs import load_data
from encoder_clean.errors import UserError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# ----------------------------------------------------------------------------- cifar10
def _cifar_batches(per_batch: int = 3, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    return {name: (rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                   [int(v) for v in rng.integers(0, 10, per_batch)]) for name in BATCHES}


def _write_cifar_py(root: Path, batches, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (data, labels) in batches.items():
        with open(folder / name, "wb") as f:
            entry = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
            pickle.dump(entry, f, protocol=protocol)
    return folder


def _write_cifar_bin(root: Path, batches) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (data, labels) in batches.items():
        records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], data], axis=1)
        records.tofile(folder / f"{name}.bin")
    return folder


def _check_cifar(dataset, batches) -> None:
    train_data = np.concatenate([batches[n][0] for n in BATCHES[:5]])
    train_labels = sum((batches[n][1] for n in BATCHES[:5]), [])
    assert dataset.train.images.shape == (15, 3, 32, 32) and dataset.train.images.dtype == torch.uint8
    assert dataset.test.images.shape == (3, 3, 32, 32)
    assert dataset.train.labels.dtype == torch.int64
    assert dataset.train.labels.tolist() == train_labels
    assert dataset.test.labels.tolist() == batches["test_batch"][1]
    assert dataset.num_classes == 10 and dataset.class_names[0] == "airplane"
    # Row layout: 1024 red, 1024 green, 1024 blue, each row-major 32 x 32.
    assert int(dataset.train.images[4, 1, 5, 7]) == int(train_data[4, 1024 + 5 * 32 + 7])
    assert np.array_equal(dataset.test.images.reshape(3, -1).numpy(), batches["test_batch"][0])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_pickles(tmp_path, protocol):
    batches = _cifar_batches()
    _write_cifar_py(tmp_path, batches, protocol)
    dataset = load_data(f"cifar10:{tmp_path}")
    _check_cifar(dataset, batches)
    assert dataset.name == f"cifar10:{tmp_path}"


def test_cifar10_root_may_be_the_batches_folder(tmp_path):
    batches = _cifar_batches(seed=1)
    folder = _write_cifar_py(tmp_path, batches)
    _check_cifar(load_data(f"cifar10:{folder}"), batches)


def test_cifar10_numpy1_global_names(tmp_path):
    # The official files were written by numpy 1 (numpy.core.multiarray); numpy 2 must still read them.
    batches = _cifar_batches(seed=2)
    folder = _write_cifar_py(tmp_path, batches, protocol=2)
    for name in BATCHES:
        raw = (folder / name).read_bytes()
        assert b"numpy._core.multiarray\n_reconstruct" in raw or b"numpy.core.multiarray\n_reconstruct" in raw
        (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    _check_cifar(load_data(f"cifar10:{tmp_path}"), batches)


def _py2_string(text: bytes) -> bytes:
    # Python 2 pickled its str (bytes) with SHORT_BINSTRING / BINSTRING.
    if len(text) < 256:
        return b"U" + bytes([len(text)]) + text
    return b"T" + struct.pack("<i", len(text)) + text


def _py2_int(value: int) -> bytes:
    return b"K" + bytes([value]) if value < 256 else b"M" + struct.pack("<H", value)


def _py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch byte for byte as Python 2 + numpy 1 wrote the official files (protocol 2, str keys)."""
    s, i = _py2_string, _py2_int
    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + i(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b")
             + b"\x87R" + b"(" + i(1) + i(len(data)) + i(3072) + b"\x86" + dtype + b"\x89"
             + s(data.tobytes()) + b"tb")
    label_list = b"](" + b"".join(i(v) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + label_list + b"u."


def test_cifar10_python2_pickles(tmp_path):
    batches = _cifar_batches(seed=4)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, (data, labels) in batches.items():
        (folder / name).write_bytes(_py2_cifar_pickle(data, labels))
    _check_cifar(load_data(f"cifar10:{tmp_path}"), batches)


def test_cifar10_binary(tmp_path):
    batches = _cifar_batches(seed=3)
    folder = _write_cifar_bin(tmp_path, batches)
    _check_cifar(load_data(f"cifar10:{tmp_path}"), batches)
    _check_cifar(load_data(f"cifar10:{folder}"), batches)


class _Payload:
    """Unpickling this runs os.mkdir: what a malicious "dataset" would do."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    # Prove the payload is live with the plain unpickler...
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.is_dir()
    # ...then hide it in a batch and check the loader neither runs it nor accepts the file.
    batches = _cifar_batches()
    folder = _write_cifar_py(tmp_path / "data", batches)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": batches["data_batch_3"][0], b"labels": [0, 0, 0], b"x": _Payload(marker)}, f)
    with pytest.raises(UserError, match="refusing.*data_batch_3.*mkdir"):
        load_data(f"cifar10:{tmp_path / 'data'}")
    assert not marker.exists()


def test_cifar10_refuses_arbitrary_codecs(tmp_path):
    batches = _cifar_batches()
    folder = _write_cifar_py(tmp_path, batches, protocol=2)
    raw = (folder / "test_batch").read_bytes()
    assert b"latin1" in raw
    (folder / "test_batch").write_bytes(raw.replace(b"latin1", b"base64", 1))
    with pytest.raises(UserError, match="refusing to load .*test_batch.*latin1"):
        load_data(f"cifar10:{tmp_path}")


def test_cifar10_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="needs a path"):
        load_data("cifar10")
    with pytest.raises(UserError, match="no cifar-10-batches"):
        load_data(f"cifar10:{tmp_path}")

    batches = _cifar_batches()
    folder = _write_cifar_py(tmp_path / "a", batches)
    with pytest.raises(UserError, match="unknown option"):
        load_data(f"cifar10:{tmp_path / 'a'}?size=32")
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="data_batch_2"):
        load_data(f"cifar10:{tmp_path / 'a'}")
    (folder / "data_batch_2").unlink()
    with pytest.raises(UserError, match="data_batch_2 is missing"):
        load_data(f"cifar10:{tmp_path / 'a'}")

    wrong = dict(batches, data_batch_1=(np.zeros((3, 3000), np.uint8), [0, 1, 2]))
    _write_cifar_py(tmp_path / "b", wrong)
    with pytest.raises(UserError, match=r"data_batch_1 must be uint8 \(N, 3072\)"):
        load_data(f"cifar10:{tmp_path / 'b'}")

    bad_labels = dict(batches, test_batch=(batches["test_batch"][0], [0, 11, 2]))
    _write_cifar_py(tmp_path / "c", bad_labels)
    with pytest.raises(UserError, match="labels .* must be 0..9"):
        load_data(f"cifar10:{tmp_path / 'c'}")

    folder = _write_cifar_bin(tmp_path / "d", batches)
    raw = (folder / "test_batch.bin").read_bytes()
    (folder / "test_batch.bin").write_bytes(raw[:-1])
    with pytest.raises(UserError, match="test_batch.bin .*truncated"):
        load_data(f"cifar10:{tmp_path / 'd'}")

    folder = tmp_path / "e" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in BATCHES:
        with open(folder / name, "wb") as f:
            pickle.dump([1, 2, 3], f)
    with pytest.raises(UserError, match="not a CIFAR batch dict"):
        load_data(f"cifar10:{tmp_path / 'e'}")


# ----------------------------------------------------------------------------- stl10
def _write_stl(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        # The files hold each channel column-major: write the transpose of the (H, W) planes.
        images[split].transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        labels[split].astype(np.uint8).tofile(folder / f"{split}_y.bin")
    return folder


def _stl_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {"train": rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8),
              "test": rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)}
    labels = {"train": np.array([1, 10, 5]), "test": np.array([2, 10])}
    return images, labels


def test_stl10_native_size_and_orientation(tmp_path):
    images, labels = _stl_data()
    images["train"][0, 0] = 0
    images["train"][0, 0, 2, 50] = 255  # row 2, column 50: lands there only if the transpose is right
    _write_stl(tmp_path, images, labels)
    dataset = load_data(f"stl10:{tmp_path}?size=96")
    assert dataset.train.images.shape == (3, 3, 96, 96) and dataset.train.images.dtype == torch.uint8
    assert np.array_equal(dataset.train.images.numpy(), images["train"])
    assert np.array_equal(dataset.test.images.numpy(), images["test"])
    assert dataset.train.labels.tolist() == [0, 9, 4] and dataset.test.labels.tolist() == [1, 9]
    assert dataset.train.images[0, 0].nonzero().tolist() == [[2, 50]]
    assert dataset.num_classes == 10 and dataset.class_names[7] == "monkey"


def test_stl10_resized_to_32_by_default(tmp_path):
    images, labels = _stl_data()
    images["train"][1] = 77  # a flat image stays flat through an antialiased resize
    images["train"][0] = 0
    images["train"][0, :, :48, :] = 200  # top half bright: stays in the top half
    folder = _write_stl(tmp_path, images, labels)
    dataset = load_data(f"stl10:{folder}")
    assert dataset.train.images.shape == (3, 3, 32, 32) and dataset.test.images.shape == (2, 3, 32, 32)
    assert bool((dataset.train.images[1] == 77).all())
    assert bool((dataset.train.images[0, :, :15] == 200).all())
    assert bool((dataset.train.images[0, :, 17:] == 0).all())
    assert load_data(f"stl10:{tmp_path}?size=48").train.images.shape == (3, 3, 48, 48)


def test_stl10_errors(tmp_path):
    images, labels = _stl_data()
    with pytest.raises(UserError, match="no stl10_binary"):
        load_data(f"stl10:{tmp_path}")
    folder = _write_stl(tmp_path / "a", images, labels)
    with pytest.raises(UserError, match="unknown option"):
        load_data(f"stl10:{tmp_path / 'a'}?colour=1")
    with pytest.raises(UserError, match="size"):
        load_data(f"stl10:{tmp_path / 'a'}?size=big")
    raw = (folder / "train_X.bin").read_bytes()
    (folder / "train_X.bin").write_bytes(raw[:-10])
    with pytest.raises(UserError, match="train_X.bin .*truncated"):
        load_data(f"stl10:{tmp_path / 'a'}")
    (folder / "train_X.bin").write_bytes(raw)
    np.array([1, 2], np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(UserError, match="2 labels for 3 images"):
        load_data(f"stl10:{tmp_path / 'a'}")
    np.array([1, 0, 2], np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(UserError, match="must be 1..10"):
        load_data(f"stl10:{tmp_path / 'a'}")
    (folder / "test_y.bin").unlink()
    np.array([1, 2, 3], np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(UserError, match="test_y.bin is missing"):
        load_data(f"stl10:{tmp_path / 'a'}")


# ----------------------------------------------------------------------------- gtsrb
GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _split_image(width: int, height: int, left, right) -> Image.Image:
    """Left half one colour, right half another: shows where pixels land after resizing."""
    array = np.empty((height, width, 3), np.uint8)
    array[:, : width // 2] = left
    array[:, width // 2:] = right
    return Image.fromarray(array)


def _write_gtsrb(root: Path) -> Path:
    base = root / "gtsrb"
    train = base / "GTSRB" / "Training"
    for class_id, count in ((0, 2), (5, 1), (42, 1)):
        folder = train / f"{class_id:05d}"
        folder.mkdir(parents=True)
        for i in range(count):
            _split_image(30 + 7 * i, 41, (255, 0, 0), (0, 0, class_id)).save(folder / f"00000_{i:05d}.ppm")
        (folder / f"GT-{class_id:05d}.csv").write_text(GT_HEADER)  # torchvision's layout has these too
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = []
    for i, class_id in enumerate((7, 0, 42)):
        _split_image(50, 45, (0, 255, 0), (class_id, class_id, class_id)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;50;45;5;5;45;40;{class_id}\n")
    # Listed out of name order: the CSV order is the split order.
    (base / "GT-final_test.csv").write_text(GT_HEADER + rows[2] + rows[0] + rows[1])
    return base


def test_gtsrb(tmp_path):
    base = _write_gtsrb(tmp_path)
    dataset = load_data(f"gtsrb:{tmp_path}")
    assert dataset.train.images.shape == (4, 3, 32, 32) and dataset.train.images.dtype == torch.uint8
    assert dataset.test.images.shape == (3, 3, 32, 32)
    assert dataset.train.labels.tolist() == [0, 0, 5, 42]
    assert dataset.test.labels.tolist() == [42, 7, 0]
    assert dataset.num_classes == 43 and len(dataset.class_names) == 43
    image = dataset.train.images[3]
    assert image[:, 10, 2].tolist() == [255, 0, 0] and image[:, 10, 29].tolist() == [0, 0, 42]
    assert dataset.test.images[0][:, 20, 29].tolist() == [42, 42, 42]
    assert dataset.test.images[1][:, 20, 2].tolist() == [0, 255, 0]
    small = load_data(f"gtsrb:{base}?size=16")
    assert small.train.images.shape == (4, 3, 16, 16)
    assert small.train.labels.tolist() == [0, 0, 5, 42]


def test_gtsrb_errors(tmp_path):
    with pytest.raises(UserError, match="no gtsrb/GTSRB"):
        load_data(f"gtsrb:{tmp_path}")
    base = _write_gtsrb(tmp_path)
    with pytest.raises(UserError, match="unknown option"):
        load_data(f"gtsrb:{tmp_path}?train=3")
    csv_path = base / "GT-final_test.csv"
    good_csv = csv_path.read_text()
    csv_path.write_text(good_csv + "00009.ppm;50;45;5;5;45;40;3\n")
    with pytest.raises(UserError, match="00009.ppm is missing"):
        load_data(f"gtsrb:{tmp_path}")
    csv_path.write_text(good_csv + "00001.ppm;50;45;5;5;45;40;43\n")
    with pytest.raises(UserError, match="line 5: ClassId 43"):
        load_data(f"gtsrb:{tmp_path}")
    csv_path.write_text("Filename,ClassId\n00000.ppm,1\n")
    with pytest.raises(UserError, match="needs the columns"):
        load_data(f"gtsrb:{tmp_path}")
    csv_path.write_text(good_csv)
    broken = base / "GTSRB" / "Training" / "00005" / "00000_00000.ppm"
    broken.write_bytes(b"P6\n30 41\n255\n" + b"\x00" * 10)
    with pytest.raises(UserError, match="cannot read image .*00005.*00000_00000.ppm"):
        load_data(f"gtsrb:{tmp_path}")
    broken.unlink()
    (base / "GTSRB" / "Training" / "extra").mkdir()
    with pytest.raises(UserError, match="not a class folder"):
        load_data(f"gtsrb:{tmp_path}")


# ----------------------------------------------------------------------------- svhn
def _svhn_arrays(count: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
    y = rng.integers(1, 11, (count, 1)).astype(np.uint8)
    y[0, 0] = 10
    return x, y


def test_svhn(tmp_path):
    x_train, y_train = _svhn_arrays(5, 0)
    x_test, y_test = _svhn_arrays(3, 1)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x_train, "y": y_train})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x_test, "y": y_test})
    dataset = load_data(f"svhn:{tmp_path}")
    assert dataset.train.images.shape == (5, 3, 32, 32) and dataset.train.images.dtype == torch.uint8
    assert dataset.test.images.shape == (3, 3, 32, 32)
    # X is (row, column, channel, index).
    assert int(dataset.train.images[2, 1, 4, 9]) == int(x_train[4, 9, 1, 2])
    assert np.array_equal(dataset.test.images.numpy(), x_test.transpose(3, 2, 0, 1))
    expected = y_train[:, 0].astype(np.int64) % 10
    assert dataset.train.labels.tolist() == expected.tolist() and dataset.train.labels[0] == 0
    assert dataset.num_classes == 10


def test_svhn_errors(tmp_path):
    x, y = _svhn_arrays(3, 0)
    with pytest.raises(UserError, match="train_32x32.mat is missing"):
        load_data(f"svhn:{tmp_path}")
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    with pytest.raises(UserError, match="test_32x32.mat is missing"):
        load_data(f"svhn:{tmp_path}")
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but not really")
    with pytest.raises(UserError, match="test_32x32.mat"):
        load_data(f"svhn:{tmp_path}")
    raw = (tmp_path / "train_32x32.mat").read_bytes()
    (tmp_path / "test_32x32.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="test_32x32.mat"):
        load_data(f"svhn:{tmp_path}")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[:, :, :2], "y": y})
    with pytest.raises(UserError, match=r"X in .*test_32x32.mat must be uint8 \(H, W, 3, N\)"):
        load_data(f"svhn:{tmp_path}")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y[:2]})
    with pytest.raises(UserError, match="must hold 3 numeric labels"):
        load_data(f"svhn:{tmp_path}")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y + 20})
    with pytest.raises(UserError, match="1..10"):
        load_data(f"svhn:{tmp_path}")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    with pytest.raises(UserError, match="unknown option"):
        load_data(f"svhn:{tmp_path}?size=32")
    assert len(load_data(f"svhn:{tmp_path}").test) == 3
