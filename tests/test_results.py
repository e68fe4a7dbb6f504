"""benchmarks/results.py: a benchmark's table replaces its own section of RESULTS.md, with its command,
commit and machine, and a JSON copy beside it; other sections stay as they were."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results():
    return load_benchmark("results")


def test_publish_writes_then_replaces_its_section(results, tmp_path, monkeypatch):
    target = tmp_path / "RESULTS.md"
    target.write_text("# Measured results\n\nintro\n\n## Earlier runs\n\nold notes\n")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "demo_bench.py"), "--epochs", "3"])
    columns = [("name", "encoder"), ("acc", "ACC %")]
    results.publish("demo-bench", "A table", [{"name": "clean", "acc": 40.5}], columns, results=target,
                    json_dir=tmp_path / "json", notes="a note", load="alone")
    results.publish("other", "Another", [{"name": "x", "acc": 1.0}], columns, results=target,
                    json_dir=tmp_path / "json")
    results.publish("demo-bench", "A table", [{"name": "clean", "acc": 41.25}], columns, results=target,
                    json_dir=tmp_path / "json")
    text = target.read_text()
    assert text.count("<!-- results:demo-bench -->") == 1 and "41.25" in text and "40.50" not in text
    assert "`python benchmarks/demo_bench.py --epochs 3` at commit" in text
    assert text.index("results:other") < text.index("## Earlier runs") and text.endswith("old notes\n")
    assert "| encoder | ACC % |\n| --- | ---: |\n| clean | 41.25 |" in text
    saved = json.loads((tmp_path / "json" / "demo-bench.json").read_text())
    assert saved["rows"] == [{"name": "clean", "acc": 41.25}] and saved["commit"] and saved["machine"]
    with pytest.raises(ValueError):
        results.publish("Bad Name", "t", [], columns, results=target, json_dir=tmp_path)


def test_benchmarks_publish_only_when_asked(results):
    parser = argparse.ArgumentParser()
    results.add_publish_arguments(parser)
    assert vars(parser.parse_args([])) == {"publish": False, "load": ""}
    asked = parser.parse_args(["--publish", "--load", "alone"])
    assert asked.publish and asked.load == "alone"
    quiet = argparse.ArgumentParser()
    results.add_publish_arguments(quiet, load="alone on the machine")
    assert quiet.parse_args([]).load == "alone on the machine"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "results.py"))
def test_every_benchmark_that_publishes_takes_the_publish_flag(script):
    """A script that can write RESULTS.md does so only under `--publish`, never on a trial run."""
    text = (ROOT / "benchmarks" / script).read_text()
    if "publish(" in text:
        assert "add_publish_arguments(parser" in text and "if args.publish" in text, script
