"""How a benchmark script publishes what it measured: its table in benchmarks/RESULTS.md, between its own
markers, with the command that printed it, the commit and the machine, and the same rows as JSON in
benchmarks/results/NAME.json. A rerun replaces the section, so the file is never edited by hand.

Every benchmark only prints its table unless it is run with `--publish` (and `--load` to say what else
ran on the machine meanwhile):

    from results import add_publish_arguments, publish
    add_publish_arguments(parser)
    ...
    if args.publish:
        publish("pretrain-probe", "Pre-training pays", rows, [("encoder", "encoder"), ("acc", "ACC %")],
                load=args.load)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from encoder_clean.fileio import write_json_atomic, write_text_atomic

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
JSON_DIR = HERE / "results"
INSERT_BEFORE = "## Earlier runs"  # new sections go above the hand-recorded notebook of older runs


def add_publish_arguments(parser: argparse.ArgumentParser, load: str = "") -> None:
    """`--publish` and `--load`, the same in every benchmark. Publishing is opt-in: a trial run, a smoke
    test or a run on a busy machine must not replace the published figures."""
    parser.add_argument("--publish", action="store_true",
                        help="write the table into benchmarks/RESULTS.md and benchmarks/results/ (default: print only)")
    parser.add_argument("--load", default=load,
                        help="what else ran on the machine meanwhile, recorded with the figures (with --publish)")


def command_line() -> str:
    """How this script was run, as a line to paste (`python benchmarks/NAME.py ARGS`)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(HERE.parent)
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def commit() -> str:
    """The checkout's commit, with `+changes` when the tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    """CPU, cores, torch threads, GPU and torch version: what the figures depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}, "
            f"torch {torch.__version__}")


def _cell(value: Any) -> str:
    """Floats keep the digits they were rounded to, and at least two (12.5 -> 12.50, 0.1227 stays)."""
    if isinstance(value, float):
        digits = len(f"{value:.6f}".rstrip("0").split(".")[1])
        return f"{value:.{max(2, digits)}f}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """`columns` are (key, header) pairs; numbers align right."""
    numeric = [all(isinstance(row[key], (int, float)) for row in rows if row.get(key) is not None)
               for key, _ in columns]
    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "| " + " | ".join("---:" if right else "---" for right in numeric) + " |"]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def section(name: str, title: str, table: str, provenance: dict[str, str], notes: str = "") -> str:
    body = [f"<!-- results:{name} -->", f"### {title}", "",
            f"`{provenance['command']}` at commit {provenance['commit']}, {provenance['date']}, on "
            f"{provenance['machine']}{'; ' + provenance['load'] if provenance.get('load') else ''}.",
            "", table]
    if notes:
        body += ["", notes.strip()]
    return "\n".join(body + [f"<!-- /results:{name} -->"])


def replace_section(text: str, name: str, new: str) -> str:
    """`text` with the section of `name` replaced by `new`, or `new` added above the older runs."""
    pattern = re.compile(rf"<!-- results:{re.escape(name)} -->.*?<!-- /results:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: new, text)
    if INSERT_BEFORE in text:
        head, tail = text.split(INSERT_BEFORE, 1)
        return f"{head.rstrip()}\n\n{new}\n\n{INSERT_BEFORE}{tail}"
    return f"{text.rstrip()}\n\n{new}\n"


def provenance_here(load: str = "") -> dict[str, str]:
    """The command, commit, machine and time of this run: what a published table records about itself."""
    return {"command": command_line(), "commit": commit(), "machine": machine(), "load": load,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def publish(name: str, title: str, rows: Sequence[dict], columns: Sequence[tuple[str, str]], *,
            notes: str = "", load: str = "", results: Path = RESULTS, json_dir: Path = JSON_DIR,
            provenance: dict[str, str] | None = None) -> Path:
    """Write (or refresh) the section `name` of RESULTS.md and `results/NAME.json`; returns RESULTS.md.
    `load` says what else ran on the machine meanwhile (figures measured beside other jobs say so).
    `provenance` replaces this run's own (`provenance_here`) for figures measured elsewhere, such as on a
    device machine that returned them."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ValueError(f"result name {name!r}: lower-case letters, digits and dashes")
    provenance = provenance or provenance_here(load)
    record = {"name": name, "title": title, **provenance, "columns": [list(c) for c in columns], "rows": list(rows),
              "notes": notes}
    json_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_dir / f"{name}.json", record)
    return render(record, results)


def render(record: dict, results: Path = RESULTS) -> Path:
    """Write the section of a published `record` (as `publish` saved it) into RESULTS.md."""
    provenance = {key: record[key] for key in ("command", "commit", "machine", "load", "date")}
    table = markdown_table(record["rows"], [tuple(c) for c in record["columns"]])
    text = results.read_text() if results.exists() else "# Measured results\n"
    new = section(record["name"], record["title"], table, provenance, record["notes"])
    return write_text_atomic(results, replace_section(text, record["name"], new))


if __name__ == "__main__":
    # `python benchmarks/results.py`: re-render every section from its JSON (after a change of layout here).
    for saved in sorted(JSON_DIR.glob("*.json")):
        render(json.loads(saved.read_text()))
