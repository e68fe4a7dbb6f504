"""Hostile inputs: every loader ends in a clean one-line rejection or a sound result, never a failure.

A sample runs here; benchmarks/robustness.py runs well over a thousand cases and prints the counts.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings

from tests.cli.test_cli import assert_clean_error, run_cli
from tests.hostile.cases import (FAILURES, MARKER_NAME, Case, hypothesis_strategies, mutation_cases, pickle_cases,
                                 run_case, structured_cases)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


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
STRATEGIES = hypothesis_strategies()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_hypothesis_drawn_inputs(name, tmp_path_factory):
    strategy, build = STRATEGIES[name]

    @FUZZ
    @given(arguments=strategy)
    def check(arguments):
        _judge(build(**arguments), tmp_path_factory.mktemp("case"))

    check()


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
