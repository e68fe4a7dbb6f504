"""Hostile inputs: every loader ends in a clean one-line rejection or a sound result, never a failure.

A sample runs here; benchmarks/robustness.py runs well over a thousand cases and prints the counts.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tests.cli.test_cli import assert_clean_error, run_cli
from tests.hostile.cases import (FAILURES, MARKER_NAME, Case, encoder_bytes, mutation_cases, pickle_cases, run_case,
                                 safetensors_join, safetensors_parts, structured_cases)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture
def fresh(tmp_path_factory):
    """A new empty folder per case (hypothesis calls the test many times within one fixture scope)."""
    return lambda: tmp_path_factory.mktemp("case")


def _judge(case: Case, folder) -> str:
    outcome, detail = run_case(case, folder)
    assert outcome not in FAILURES, f"{case.loader} / {case.name}: {outcome}: {detail}"
    return outcome


def test_structured_hostile_inputs(tmp_path_factory):
    outcomes = [_judge(case, tmp_path_factory.mktemp("case")) for case in structured_cases(random.Random(0))]
    assert outcomes.count("rejected") > 100  # most of them are refused, each with one line


def test_byte_mutations_of_valid_inputs(tmp_path_factory):
    cases = mutation_cases(random.Random(1), 25, tmp_path_factory.mktemp("seeds"))
    outcomes = [_judge(case, tmp_path_factory.mktemp("case")) for case in cases]
    assert len(outcomes) == 175 and "rejected" in outcomes


def test_code_in_a_pickle_never_runs(tmp_path_factory):
    for case in pickle_cases(random.Random(0)):
        if case.name.startswith("payload"):
            folder = tmp_path_factory.mktemp("case")
            assert _judge(case, folder) == "rejected"
            assert not (folder.parent / MARKER_NAME).exists()


# ------------------------------------------------------------------------------ hypothesis
LOADER_SUFFIXES = {"safetensors": ".safetensors", "pt": ".pt", "npz": ".npz", "png-trigger": ".png",
                   "npz-trigger": ".npz", "resume": ".resume.pt"}


@FUZZ
@given(loader=st.sampled_from(sorted(LOADER_SUFFIXES)), data=st.binary(max_size=2048))
def test_arbitrary_bytes(fresh, loader, data):
    suffix = LOADER_SUFFIXES[loader]

    def write(folder):
        (folder / f"input{suffix}").write_bytes(data)
        return str(folder / f"input{suffix}")

    _judge(Case(loader, "bytes", write), fresh())


SEED = encoder_bytes("safetensors")
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=8)


@FUZZ
@given(field=st.sampled_from(["dtype", "shape", "data_offsets", "extra"]), value=json_values, which=st.integers(0, 10**6),
       metadata=st.dictionaries(st.sampled_from(["arch", "image_size", "mean", "std", "settings", "format_version"]),
                                st.text(max_size=12), max_size=3))
def test_safetensors_headers(fresh, field, value, which, metadata):
    header, body = safetensors_parts(SEED)
    names = [k for k in header if k != "__metadata__"]
    header[names[which % len(names)]][field] = value
    header["__metadata__"].update(metadata)

    def write(folder):
        (folder / "input.safetensors").write_bytes(safetensors_join(header, body))
        return str(folder / "input.safetensors")

    _judge(Case("safetensors", f"{field}={value!r}", write), fresh())


image_dtypes = st.sampled_from([np.uint8, np.int8, np.float32, np.float16, np.int64, np.bool_])
label_dtypes = st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.bool_])


@FUZZ
@given(x=hnp.arrays(image_dtypes, hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6)),
       y=hnp.arrays(label_dtypes, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=8)))
def test_npz_datasets_of_any_shape_and_dtype(fresh, x, y):
    def write(folder):
        buffer = io.BytesIO()
        np.savez(buffer, x_train=x, y_train=y, x_test=x, y_test=y)
        (folder / "input.npz").write_bytes(buffer.getvalue())
        return str(folder / "input.npz")

    _judge(Case("npz", f"x {x.dtype}{x.shape} y {y.dtype}{y.shape}", write), fresh())


# ------------------------------------------------------------------------------ through the real CLI
@pytest.mark.parametrize("case_name", ["header-length=18446744073709551615", "weights=nan", "metadata image_size=abc",
                                       "payload system protocol 2"])
def test_hostile_encoder_files_through_the_cli(case_name, tmp_path):
    cases = {case.name: case for case in structured_cases(random.Random(0))}
    folder = tmp_path / "case"
    folder.mkdir()
    path = cases[case_name].write(folder)
    for command in (["scan", path, "--shadow-images", "8"], ["evaluate", path, "--data", "builtin?train=20&test=20"]):
        assert_clean_error(run_cli(*command))
    assert not (tmp_path / MARKER_NAME).exists()
