"""Hostile input and crash safety, counted: fuzzed inputs through every loader and the CLI, and runs
killed with SIGKILL at random moments then resumed.

    python benchmarks/robustness.py                       # >1000 fuzz cases, 20 CLI cases, 20 kills
    python benchmarks/robustness.py --mutations 20 --hypothesis 20 --cli 4 --kills 3   # a quick look
    python benchmarks/robustness.py --publish             # the counts into benchmarks/RESULTS.md (`robustness`)

Prints the count of each outcome per loader (failures: traceback, bad-message, unsound, hang, memory,
code-executed), the CLI exit codes, and for the kills how many outputs were byte-identical to the
uninterrupted run. Cases come from tests/hostile/cases.py, shared with the default test suite.

The CLI cases and the kills run `encoder-clean` in processes of its own, not the Python API, because the
process is what they test: its exit codes and messages on hostile input, and what a SIGKILL leaves on disk.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import add_publish_arguments, publish  # noqa: E402
from tests.hostile.cases import (FAILURES, MARKER_NAME, Case, hypothesis_strategies,  # noqa: E402
                                 mutation_cases, run_case, structured_cases)

# Three phases (the teacher's fine-tuning, 40 steps; the student's warm-up, 2; the distillation, 80), long
# enough that most kills land in training rather than in the interpreter's start-up or exit.
KILL_COMMAND = ["distill", "--arch", "resnet10-cifar-w8", "--data", "builtin?train=640&test=20",
                "--clean-fraction", "0.5", "--epochs", "4", "--batch-size", "16", "--finetune-option", "epochs=2",
                "--finetune-option", "batch_size=16", "-o", "warmup_epochs=1", "--quiet", "--checkpoint-every", "5"]


def fuzz(args: argparse.Namespace, scratch: Path) -> tuple[collections.Counter, list[str]]:
    rng = random.Random(args.seed)
    cases = structured_cases(rng) + mutation_cases(rng, args.mutations, scratch / "seeds")
    tally: collections.Counter = collections.Counter()
    failures: list[str] = []

    def judge(case: Case) -> None:
        folder = Path(tempfile.mkdtemp(dir=scratch))
        outcome, detail = run_case(case, folder)
        tally[(case.loader, outcome)] += 1
        if outcome in FAILURES:
            failures.append(f"{outcome}: {case.loader} / {case.name}: {detail}")

    for case in cases:
        judge(case)
    from hypothesis import HealthCheck, given, settings
    for name, (strategy, build) in hypothesis_strategies().items():
        @settings(max_examples=args.hypothesis, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(arguments=strategy)
        def draw(arguments):
            judge(build(**arguments))
        draw()
    return tally, failures


def cli_sample(args: argparse.Namespace, scratch: Path) -> collections.Counter:
    """Hostile encoder and data files through real `scan` and `evaluate` processes."""
    rng = random.Random(args.seed + 1)
    pool = [c for c in structured_cases(rng) + mutation_cases(rng, 10, scratch / "cli-seeds")
            if c.loader in ("safetensors", "pt", "npz")]
    tally: collections.Counter = collections.Counter()
    for case in rng.sample(pool, min(args.cli, len(pool))):
        folder = Path(tempfile.mkdtemp(dir=scratch))
        argument = case.write(folder)
        if case.loader == "npz":
            command = ["evaluate", str(scratch / "clean.safetensors"), "--data", f"npz:{argument}", "--probe-epochs", "2"]
        else:
            command = ["scan", argument, "--shadow-images", "16"]
        result = subprocess.run([sys.executable, "-m", "encoder_clean", *command], capture_output=True, text=True,
                                timeout=600)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        clean_line = result.returncode != 2 or (len(lines) == 1 and lines[0].startswith("error:"))
        if "Traceback" in result.stderr or not clean_line or result.returncode not in (0, 1, 2):
            tally["failure"] += 1
            print(f"  CLI failure on {case.loader} / {case.name}: exit {result.returncode}: {result.stderr[-300:]}")
        else:
            tally[f"exit {result.returncode}"] += 1
        if (folder.parent / MARKER_NAME).exists():
            tally["code-executed"] += 1
    return tally


def kills(args: argparse.Namespace, scratch: Path) -> dict[str, object]:
    """SIGKILL a three-phase `distill` at random moments, resume it, compare bytes with an uninterrupted run."""
    teacher = scratch / "clean.safetensors"
    reference = scratch / "reference.safetensors"
    started = time.perf_counter()
    _cli(KILL_COMMAND[:1] + [str(teacher)] + KILL_COMMAND[1:] + ["--out", str(reference)])
    full_seconds = time.perf_counter() - started
    rng = random.Random(args.seed + 2)
    results = collections.Counter()
    for index in range(args.kills):
        out = scratch / f"killed{index}.safetensors"
        command = KILL_COMMAND[:1] + [str(teacher)] + KILL_COMMAND[1:] + ["--out", str(out)]
        process = subprocess.Popen([sys.executable, "-m", "encoder_clean", *command], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        checkpoint = out.with_name(out.name + ".resume.pt")
        if index % 2:  # odd kills: at a random moment after the first checkpoint exists (mid-training)
            while not checkpoint.exists() and process.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5) * full_seconds)
        else:  # even kills: at a random moment of the whole run, start-up included
            time.sleep(rng.uniform(0.15, 0.9) * full_seconds)
        os.kill(process.pid, signal.SIGKILL)
        finished_first = process.wait() == 0
        had_checkpoint = checkpoint.exists()
        if finished_first:
            stage = "finished before the kill"
        elif out.exists():  # the output is renamed into place whole; the kill hit the exit after it
            stage = "killed after writing its output"
        else:
            resumed = _cli(command + ["--resume"])
            stage = ("killed, resumed from a checkpoint" if "resuming from" in resumed.stderr
                     else "killed before the first checkpoint, rerun")
        results[stage] += 1
        identical = out.exists() and out.read_bytes() == reference.read_bytes()
        results["identical to the uninterrupted run" if identical else "corrupt, different or missing"] += 1
        print(f"  kill {index + 1}: {stage}, checkpoint {'present' if had_checkpoint else 'absent'} at the kill, "
              f"output {'identical' if identical else 'DIFFERENT'}", flush=True)
    return {"uninterrupted_seconds": round(full_seconds, 1), **results}


def _cli(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "encoder_clean", *command], capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=150, help="byte mutations per seed input (7 seed inputs)")
    parser.add_argument("--hypothesis", type=int, default=100, help="hypothesis examples per strategy (3 strategies)")
    parser.add_argument("--cli", type=int, default=20, help="hostile files run through real CLI processes")
    parser.add_argument("--kills", type=int, default=20, help="runs killed with SIGKILL and resumed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    add_publish_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        _cli(["pretrain", "--arch", "resnet10-cifar-w8", "--epochs", "0", "--out", str(scratch / "clean.safetensors")])
        started = time.perf_counter()
        tally, failures = fuzz(args, scratch)
        fuzz_seconds = time.perf_counter() - started
        cli = cli_sample(args, scratch)
        killed = kills(args, scratch)

    by_outcome = collections.Counter()
    outcomes = ("ok", "rejected", *FAILURES)
    print(f"\n## fuzzed inputs: {sum(tally.values())} in {fuzz_seconds:.0f} s")
    print("| loader | " + " | ".join(outcomes) + " |")
    print("| --- |" + " ---: |" * (2 + len(FAILURES)))
    rows = [{"loader": loader, **{outcome: tally[(loader, outcome)] for outcome in outcomes}}
            for loader in sorted({loader for loader, _ in tally})]
    for row in rows:
        print(f"| {row['loader']} | " + " | ".join(str(row[outcome]) for outcome in outcomes) + " |")
    for (_, outcome), count in tally.items():
        by_outcome[outcome] += count
    totals = "totals: " + ", ".join(f"{k} {v}" for k, v in sorted(by_outcome.items()))
    print(totals)
    for line in failures[:20]:
        print("  " + line)
    print(f"\n## hostile files through the CLI (scan, evaluate): {dict(cli)}")
    print(f"\n## SIGKILL and --resume: {killed}")
    if args.publish:
        publish("robustness", "Hostile input and interrupted runs: fuzzed inputs per loader and outcome", rows,
                [("loader", "loader"), *((outcome, outcome) for outcome in outcomes)], load=args.load,
                notes=f"{sum(tally.values())} fuzzed inputs in {fuzz_seconds:.0f} s; {totals}. Hostile files "
                      f"through the CLI (scan, evaluate): {dict(cli)}. SIGKILL and --resume: {killed}.")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "fuzz": {f"{loader}/{outcome}": count for (loader, outcome), count in sorted(tally.items())},
            "fuzz_totals": dict(by_outcome), "failures": failures, "cli": dict(cli), "kills": killed}, indent=2))


if __name__ == "__main__":
    main()
