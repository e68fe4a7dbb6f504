"""Does pre-training pay? Linear-probe ACC of `pretrain`'s encoder against the random initialisation.

Runs the real commands (`encoder-clean pretrain` and `encoder-clean evaluate`) as a user would, on the
CPU: pre-trains `resnet18-cifar-w16` on one built-in family within the time budget, writes the random
initialisation of the same architecture (`--epochs 0`), and evaluates both on the same family and on the
other one (the cross-dataset setting), with the papers' 10x10 white-square trigger and target class 0.

    python benchmarks/pretrain_probe.py [--epochs 3] [--family shapes] [--augment strong] [--out-dir benchmarks/cache]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ARCH = "resnet18-cifar-w16"
FAMILIES = ("shapes", "glyphs")


def cli(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "encoder_clean", *args, "--device", "cpu", "--json", "-"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(args)}\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--family", choices=FAMILIES, default="shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", default="strong", help="pretrain's augmentation preset")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.augment == "strong" else f"_{args.augment}"
    trained = args.out_dir / f"pretrained_{args.family}_e{args.epochs}_s{args.seed}{suffix}.safetensors"
    random = args.out_dir / f"random_s{args.seed}.safetensors"

    started = time.perf_counter()
    summary = cli("pretrain", "--data", f"builtin:{args.family}", "--arch", ARCH, "--epochs", str(args.epochs),
                  "--augment", args.augment, "--seed", str(args.seed), "--out", str(trained))
    wall = time.perf_counter() - started
    cli("pretrain", "--data", f"builtin:{args.family}", "--arch", ARCH, "--epochs", "0", "--seed", str(args.seed),
        "--out", str(random))

    print(f"pretrain {ARCH} on builtin:{args.family} (--augment {args.augment}): {summary['steps']} steps, {wall:.1f} s wall "
          f"(command's own timer {summary['seconds']:.1f} s)")
    print(f"{'evaluated on':<18}{'encoder':<14}{'ACC %':>8}{'ASR %':>8}{'ASR non-target %':>18}")
    for family in FAMILIES:
        report = cli("evaluate", str(random), str(trained), "--data", f"builtin:{family}",
                     "--trigger", "white-square", "--target-class", "0")
        rows = dict(zip(("random init", "pre-trained"), report["encoders"]))
        for name, row in rows.items():
            print(f"{'builtin:' + family:<18}{name:<14}{row['acc']:>8.2f}{row['asr']:>8.2f}"
                  f"{row['asr_nontarget']:>18.2f}")
        gain = rows["pre-trained"]["acc"] - rows["random init"]["acc"]
        print(f"{'':<18}{'gain':<14}{gain:>+8.2f}")


if __name__ == "__main__":
    main()
