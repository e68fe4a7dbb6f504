"""Vision transformers: poison a small ViT, clean it, scan both.

    python benchmarks/vit_study.py [--arch vit-p4-d4-w64] [--pretrain-epochs 16] [--pretrain-lr 1e-3]
        [--num-references 100] [--poison-epochs 6] [--family shapes] [--device cpu] [--out-dir benchmarks/cache/vit]
        [--train N] [--publish [--load TEXT]]

Every step runs what the command of that name runs, through the Python API in-process (outputs cached
in --out-dir, reused when present); with --publish the table goes to benchmarks/RESULTS.md (section
`vit-study`):
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
from typing import Callable

import encoder_clean as ec
from results import add_publish_arguments, publish

TRIGGER, TARGET = "white-square", 0


def cached(path: Path, make: Callable[[], ec.TrainResult]) -> float | None:
    """Make and save the encoder at `path` unless it is there; the seconds it took, or None if cached."""
    if path.exists():
        return None
    started = time.perf_counter()
    make().save(path)
    return time.perf_counter() - started


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
    parser.add_argument("--train", type=int, default=None, help="training images of the built-in family (default: all)")
    add_publish_arguments(parser)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = f"builtin:{args.family}" + (f"?train={args.train}" if args.train else "")
    stem = f"{args.arch}_{args.family}_e{args.pretrain_epochs}" + (f"_n{args.train}" if args.train else "")
    clean = args.out_dir / f"{stem}_clean.safetensors"
    poisoned = args.out_dir / f"{stem}_badencoder_r{args.num_references}_e{args.poison_epochs}.safetensors"
    cleaned = poisoned.with_name(poisoned.stem + "_distilled.safetensors")
    run = {"device": args.device}
    made = [
        cached(clean, lambda: ec.pretrain(data, ec.PretrainConfig(arch=args.arch, epochs=args.pretrain_epochs,
                                                                  lr=args.pretrain_lr), **run)),
        cached(poisoned, lambda: ec.poison(clean, data, ec.PoisonConfig(
            attack="badencoder", trigger=TRIGGER, target_class=TARGET, reference_data=data,
            num_references=args.num_references, epochs=args.poison_epochs), **run)),
        cached(cleaned, lambda: ec.distill(poisoned, data, **run)),
    ]
    encoders = {"clean": clean, "poisoned (BadEncoder)": poisoned, "distilled (recommended recipe)": cleaned}
    report = ec.evaluate(list(encoders.values()), data, ec.EvalConfig(trigger=TRIGGER, target_class=TARGET), **run)
    started = time.perf_counter()
    verdicts = [ec.scan(path, "builtin", **run) for path in encoders.values()]
    scan_seconds = time.perf_counter() - started
    rows = [{"encoder": name, **{key: row.as_dict()[key] for key in ("acc", "asr", "asr_nontarget")},
             "verdict": verdict.verdict, "score": round(verdict.score, 4), "margin": round(verdict.margin, 4),
             "made_seconds": "cached" if took is None else round(took)}
            for (name, _), row, verdict, took in zip(encoders.items(), report.encoders, verdicts, made)]
    columns = [("encoder", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"), ("asr_nontarget", "ASR non-target %"),
               ("verdict", "scan verdict"), ("score", "scan score"), ("margin", "margin"),
               ("made_seconds", "made in s")]
    for row in rows:
        print(" | ".join(str(row[key]) for key, _ in columns))
    if args.publish:
        publish("vit-study", f"A small ViT ({args.arch})", rows, columns, load=args.load,
                notes=f"{args.arch} pre-trained on {data} ({args.pretrain_epochs} epochs, lr {args.pretrain_lr}); "
                      f"linear probe on {data}; trigger {TRIGGER}, target class {TARGET}; `scan` with its defaults on "
                      f"builtin took {scan_seconds:.0f} s for the three; device {args.device}.")


if __name__ == "__main__":
    main()
