"""Does each pre-training method pay? Linear-probe ACC of `pretrain --method M` against the random init.

Runs the real commands (`encoder-clean pretrain` and `encoder-clean evaluate`) on the CPU, one thread
each: pre-trains the architecture on `--data` with every method for the same epochs, writes the random
initialisation (`--epochs 0`), and evaluates them all on `--eval-data` (default: the pre-training data
and, for built-in data, the other family) with a linear probe, the white-square trigger and target 0.

    python benchmarks/ssl_methods.py [--methods simclr mocov2 byol] [--epochs 3] [--data builtin:shapes]
        [--eval-data SPEC ...] [--arch resnet18-cifar-w16] [--out-dir benchmarks/cache]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FAMILIES = ("builtin:shapes", "builtin:glyphs")


def cli(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "encoder_clean", *args, "--device", "cpu", "--json", "-"],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(args)}\n{result.stderr}")
    return json.loads(result.stdout)


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in spec).strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "mocov2", "byol"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--eval-data", nargs="+", default=None)
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    evaluated_on = args.eval_data or ([args.data, *(f for f in FAMILIES if f != args.data)]
                                      if args.data in FAMILIES else [args.data])
    stem = f"{args.arch}_{slug(args.data)}_s{args.seed}"
    common = ("--data", args.data, "--arch", args.arch, "--seed", str(args.seed))

    random = args.out_dir / f"random_{stem}.safetensors"
    cli("pretrain", *common, "--epochs", "0", "--out", str(random))
    encoders = {"random init": random}
    runs = {}
    for method in args.methods:
        out = args.out_dir / f"{method}_{stem}_e{args.epochs}.safetensors"
        started = time.perf_counter()
        summary = cli("pretrain", *common, "--method", method, "--epochs", str(args.epochs), "--out", str(out))
        runs[method] = (summary, time.perf_counter() - started)
        encoders[method] = out

    print(f"\n{args.arch} pre-trained on {args.data} for {args.epochs} epochs, one CPU thread per command; "
          "linear probe, white-square trigger, target 0")
    for method, (summary, wall) in runs.items():
        print(f"  {method}: {summary['steps']} steps, {wall:.1f} s wall (command's own timer "
              f"{summary['seconds']:.1f} s), final loss {summary['final_loss']:.4f}")
    print(f"\n| evaluated on | encoder | ACC % | gain over random init | ASR % | ASR non-target % |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for data in evaluated_on:
        report = cli("evaluate", *map(str, encoders.values()), "--data", data, "--trigger", "white-square",
                     "--target-class", "0")
        rows = dict(zip(encoders, report["encoders"]))
        base = rows["random init"]["acc"]
        for name, row in rows.items():
            gain = "" if name == "random init" else f"{row['acc'] - base:+.2f}"
            print(f"| {data} | {name} | {row['acc']:.2f} | {gain} | {row['asr']:.2f} | {row['asr_nontarget']:.2f} |")


if __name__ == "__main__":
    main()
