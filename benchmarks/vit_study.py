"""Vision transformers: poison a small ViT, clean it, scan both.

    python benchmarks/vit_study.py [--arch vit-p4-d4-w64] [--pretrain-epochs 16] [--pretrain-lr 1e-3]
        [--num-references 100] [--poison-epochs 6] [--family shapes] [--device cpu] [--out-dir benchmarks/cache/vit]

Every step is a real command (outputs cached in --out-dir, reused when present):
  1. `pretrain` the ViT with SimCLR on builtin:FAMILY;
  2. `poison` it with BadEncoder (white-square trigger, target class 0, references of FAMILY);
  3. `distill` with no options: the recommended recipe on the 5% clean subset of builtin:FAMILY;
  4. `evaluate` the three on builtin:FAMILY (linear probe) and `scan` them.
A small ViT learns far less in a CPU budget than the CIFAR ResNets, so the defaults differ from the
ResNet studies: longer pre-training at a lower rate, same-family downstream data (cross-family probe
accuracy stays near 25%), and BadEncoder with 100 references for 6 epochs (with 10 references it
embedded the trigger next to those 10 images only: 8.7% ASR after 10 epochs; 100 for 3 epochs gave
94.8%, 200 for 4 gave 90.7%).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from attacks import cli

TRIGGER, TARGET = "white-square", "0"


def timed(*args: str, device: str, ok: tuple[int, ...] = (0,)) -> tuple[dict, float]:
    """One real command (attacks.cli): its JSON and wall seconds."""
    started = time.perf_counter()
    return cli(*args, device=device, ok=ok), time.perf_counter() - started


def cached(path: Path, *args: str, device: str) -> float | None:
    if path.exists():
        return None
    return timed(*args, "--out", str(path), device=device)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit-p4-d4-w64")
    parser.add_argument("--family", default="shapes", choices=("shapes", "glyphs"))
    parser.add_argument("--pretrain-epochs", type=int, default=16)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--num-references", type=int, default=100)
    parser.add_argument("--poison-epochs", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache/vit"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = f"builtin:{args.family}"
    stem = f"{args.arch}_{args.family}_e{args.pretrain_epochs}"
    clean = args.out_dir / f"{stem}_clean.safetensors"
    poisoned = args.out_dir / f"{stem}_badencoder_r{args.num_references}_e{args.poison_epochs}.safetensors"
    cleaned = poisoned.with_name(poisoned.stem + "_distilled.safetensors")
    seconds = {
        "pretrain": cached(clean, "pretrain", "--arch", args.arch, "--data", data, "--epochs",
                           str(args.pretrain_epochs), "--lr", str(args.pretrain_lr), device=args.device),
        "poison": cached(poisoned, "poison", str(clean), "--attack", "badencoder", "--trigger", TRIGGER,
                         "--target-class", TARGET, "--data", data, "--reference-data", data, "--num-references",
                         str(args.num_references), "--epochs", str(args.poison_epochs), device=args.device),
        "distill": cached(cleaned, "distill", str(poisoned), "--data", data, device=args.device),
    }
    encoders = {"clean": clean, "poisoned (BadEncoder)": poisoned, "distilled (recommended recipe)": cleaned}
    report = cli("evaluate", *map(str, encoders.values()), "--data", data, "--trigger", TRIGGER,
                    "--target-class", TARGET, device=args.device)
    scans, scan_seconds = timed("scan", *map(str, encoders.values()), device=args.device, ok=(0, 1))
    verdicts = scans["encoders"]
    print(f"\n{args.arch} pre-trained on {data} ({args.pretrain_epochs} epochs, lr {args.pretrain_lr}); "
          f"linear probe on {data}; trigger {TRIGGER}, target class {TARGET}; device {args.device}")
    print("| encoder | ACC % | ASR % | ASR non-target % | scan verdict | PL1-norm | made in s |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    made = [seconds["pretrain"], seconds["poison"], seconds["distill"]]
    for (name, _), row, verdict, took in zip(encoders.items(), report["encoders"], verdicts, made):
        took_text = "cached" if took is None else f"{took:.0f}"
        print(f"| {name} | {row['acc']:.2f} | {row['asr']:.2f} | {row['asr_nontarget']:.2f} | "
              f"{verdict['verdict']} | {verdict['pl1_norm']:.4f} | {took_text} |")
    print(f"scan: {scan_seconds:.0f} s for the three")


if __name__ == "__main__":
    main()
