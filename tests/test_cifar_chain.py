"""benchmarks/cifar_chain.py: how it makes, finds and skips encoders in a cache shared by parallel runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def cifar_chain():
    return load_benchmark("cifar_chain")


class Made:
    """Stands in for a TrainResult: save() writes the bytes and remembers where."""

    def __init__(self):
        self.saved_to: list[Path] = []

    def save(self, path: Path) -> None:
        self.saved_to.append(path)
        path.write_bytes(b"weights")


def test_an_encoder_is_saved_under_a_partial_name_then_renamed(cifar_chain, tmp_path):
    run, made = cifar_chain.Runner("cpu", tmp_path / "logs"), Made()
    out = tmp_path / "clean.safetensors"
    assert run.cached("pretrain", out, lambda **step: made) == out
    assert made.saved_to == [tmp_path / "clean.partial.safetensors"]
    assert out.read_bytes() == b"weights" and not made.saved_to[0].exists()
    assert run.cached("pretrain", out, lambda **step: pytest.fail("made twice")) == out  # found, not made


def test_cached_only_leaves_out_what_no_run_has_made(cifar_chain, tmp_path):
    run = cifar_chain.Runner("cpu", tmp_path / "logs")
    run.cached_only = True
    assert run.cached("distill on drupe", tmp_path / "missing.safetensors",
                      lambda **step: pytest.fail("made under cached_only")) is None
