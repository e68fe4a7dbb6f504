"""The defender's subset and the shadow images: seeded, class-balanced, independent of file order."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoder_clean.data.dataset import Split
from encoder_clean.data.sampling import balanced_sample, class_quotas, clean_subset
from encoder_clean.data.specs import load_data
from encoder_clean.errors import UserError


def _class_sorted_arrays(per_class: dict[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random 8x8 images, stored class by class (as many real files are)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(count, label) for label, count in sorted(per_class.items())])
    images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
    return images, labels.astype(np.int64)


def _write_npz(folder: Path, images: np.ndarray, labels: np.ndarray) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=images, y=labels)
    np.savez(folder / "test.npz", x=images[:4], y=labels[:4])
    return f"npz:{folder}"


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> str:
    for index, (image, label) in enumerate(zip(images, labels)):
        for split in ("train", "test") if index < 4 else ("train",):
            path = root / split / f"class{label}" / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
    return f"folder:{root}?size=8"


def _picked(split: Split, index: torch.Tensor) -> set[bytes]:
    return {split.images[i].numpy().tobytes() for i in index.tolist()}


@pytest.mark.parametrize("writer", [_write_npz, _write_folder])
def test_class_sorted_files_give_a_class_balanced_subset(tmp_path, writer):
    images, labels = _class_sorted_arrays({0: 40, 1: 40, 2: 40, 3: 40})
    dataset = load_data(writer(tmp_path / "data", images, labels))
    assert dataset.train.labels.tolist() == sorted(dataset.train.labels.tolist())  # stored class by class
    sample = clean_subset(dataset, 0.1, seed=0)
    assert len(sample) == 16
    assert Counter(sample.split.labels.tolist()) == {0: 4, 1: 4, 2: 4, 3: 4}
    described = sample.describe(dataset.class_names)
    assert described["size"] == 16 and described["short_classes"] == []
    assert set(described["per_class"].values()) == {4} and len(described["sha256"]) == 64


def test_same_seed_same_images_other_seed_other_images(tiny_data):
    first, again = clean_subset(tiny_data, 0.2, seed=3), clean_subset(tiny_data, 0.2, seed=3)
    other = clean_subset(tiny_data, 0.2, seed=4)
    assert torch.equal(first.split.images, again.split.images) and first.sha256 == again.sha256
    assert first.sha256 != other.sha256
    assert _picked(tiny_data.train, first.index) != _picked(tiny_data.train, other.index)


def test_the_sample_does_not_depend_on_file_order():
    images, labels = _class_sorted_arrays({0: 30, 1: 30, 2: 30})
    ordered = Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    shuffle = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(9))
    shuffled = ordered.subset(shuffle)
    a, b = balanced_sample(ordered, 12, seed=1), balanced_sample(shuffled, 12, seed=1)
    assert torch.equal(a.split.images, b.split.images) and torch.equal(a.split.labels, b.split.labels)
    assert a.sha256 == b.sha256


def test_a_short_class_is_taken_whole_and_its_shortfall_shared_out():
    images, labels = _class_sorted_arrays({0: 50, 1: 2, 2: 50})
    split = Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    sample = balanced_sample(split, 30, seed=0)
    counts = Counter(sample.split.labels.tolist())
    assert counts[1] == 2 and counts[0] + counts[2] == 28 and abs(counts[0] - counts[2]) <= 1
    assert sample.short_classes == [1]
    assert sample.describe(["a", "b", "c"])["short_classes"] == ["b"]


def test_quotas_fill_every_class_before_any_gets_more():
    assert class_quotas({0: 10, 1: 10, 2: 10}, 7, seed=0) in (
        {0: 3, 1: 2, 2: 2}, {0: 2, 1: 3, 2: 2}, {0: 2, 1: 2, 2: 3})
    assert class_quotas({0: 1, 1: 100}, 50, seed=0) == {0: 1, 1: 49}
    assert class_quotas({0: 3, 1: 4}, 100, seed=0) == {0: 3, 1: 4}


def test_a_sample_larger_than_the_split_is_the_whole_split(tiny_data):
    sample = balanced_sample(tiny_data.train, 10_000, seed=0)
    assert len(sample) == len(tiny_data.train)
    with pytest.raises(UserError):
        balanced_sample(tiny_data.train, 0, seed=0)


def test_bad_clean_fraction_names_its_flag(tiny_data):
    with pytest.raises(UserError, match="--clean-fraction"):
        clean_subset(tiny_data, 1.5, seed=0)


def test_scan_reports_its_class_balanced_shadow_sample(tmp_path):
    images, labels = _class_sorted_arrays({0: 20, 1: 20, 2: 20, 3: 20})
    spec = _write_npz(tmp_path / "data", np.repeat(np.repeat(images, 4, 1), 4, 2), labels)  # 32x32
    encoder = tmp_path / "enc.safetensors"
    run = [sys.executable, "-m", "encoder_clean"]
    subprocess.run([*run, "pretrain", "--arch", "resnet10-cifar-w8", "--epochs", "0", "--out", str(encoder)],
                   check=True, capture_output=True)
    done = subprocess.run([*run, "scan", str(encoder), "--data", spec, "--shadow-images", "8", "-o", "steps=2",
                           "--json", "-", "--quiet"], capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["shadow_images"] == 8
    assert report["shadow_sample"]["per_class"] == {"0": 2, "1": 2, "2": 2, "3": 2}
