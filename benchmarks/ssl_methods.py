"""Does each pre-training method pay? Linear-probe ACC of `pretrain --method M` against the random init.

Runs what `encoder-clean pretrain` and `encoder-clean evaluate` run, through the Python API in-process,
on the CPU with one thread: pre-trains the architecture on `--data` with every method for the same
epochs, writes the random initialisation (0 epochs), and evaluates them all on `--eval-data` (default:
the pre-training data and, for built-in data, the other family) with a linear probe, the white-square
trigger and target 0.

    python benchmarks/ssl_methods.py [--methods simclr mocov2 byol] [--epochs 3] [--data builtin:shapes]
        [--eval-data SPEC ...] [--arch resnet18-cifar-w16] [--out-dir benchmarks/cache]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import encoder_clean as ec

FAMILIES = ("builtin:shapes", "builtin:glyphs")


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
    torch.set_num_threads(1)  # the figures are one-thread figures, whatever the machine
    evaluated_on = args.eval_data or ([args.data, *(f for f in FAMILIES if f != args.data)]
                                      if args.data in FAMILIES else [args.data])
    stem = f"{args.arch}_{slug(args.data)}_s{args.seed}"
    run = {"device": "cpu", "seed": args.seed}

    random = args.out_dir / f"random_{stem}.safetensors"
    ec.pretrain(args.data, ec.PretrainConfig(arch=args.arch, epochs=0), **run).save(random)
    encoders = {"random init": random}
    runs = {}
    for method in args.methods:
        out = args.out_dir / f"{method}_{stem}_e{args.epochs}.safetensors"
        started = time.perf_counter()
        result = ec.pretrain(args.data, ec.PretrainConfig(arch=args.arch, method=method, epochs=args.epochs), **run)
        result.save(out)
        runs[method] = (result, time.perf_counter() - started)
        encoders[method] = out

    print(f"\n{args.arch} pre-trained on {args.data} for {args.epochs} epochs, one CPU thread; "
          "linear probe, white-square trigger, target 0")
    for method, (result, wall) in runs.items():
        print(f"  {method}: {result.report['steps']} steps, {wall:.1f} s wall with the save ({result.seconds:.1f} s "
              f"in ec.pretrain), final loss {result.report['final_loss']:.4f}")
    print(f"\n| evaluated on | encoder | ACC % | gain over random init | ASR % | ASR non-target % |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for data in evaluated_on:
        report = ec.evaluate(list(encoders.values()), data, ec.EvalConfig(trigger="white-square", target_class=0),
                             device="cpu")
        rows = dict(zip(encoders, report.as_dict()["encoders"]))
        base = rows["random init"]["acc"]
        for name, row in rows.items():
            gain = "" if name == "random init" else f"{row['acc'] - base:+.2f}"
            print(f"| {data} | {name} | {row['acc']:.2f} | {gain} | {row['asr']:.2f} | {row['asr_nontarget']:.2f} |")


if __name__ == "__main__":
    main()
