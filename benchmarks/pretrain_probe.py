"""Does pre-training pay? Linear-probe ACC of a pre-trained encoder against the random initialisation.

Runs what `encoder-clean pretrain` and `encoder-clean evaluate` run, through the Python API, on the CPU:
pre-trains `resnet18-cifar-w16` on one built-in family, writes the random initialisation of the same
architecture (0 epochs), and evaluates both on the same family and on the other one (the cross-dataset
setting), with the papers' 10x10 white-square trigger and target class 0. With --publish the table goes
to benchmarks/RESULTS.md (section `pretrain-probe-FAMILY`).

    python benchmarks/pretrain_probe.py [--epochs 3] [--family shapes] [--augment strong] [--out-dir benchmarks/cache]
        [--publish [--load TEXT]]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import encoder_clean as ec
from results import add_publish_arguments, publish

ARCH = "resnet18-cifar-w16"
FAMILIES = ("shapes", "glyphs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--family", choices=FAMILIES, default="shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", default="strong", help="pretrain's augmentation preset")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache"))
    add_publish_arguments(parser)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.augment == "strong" else f"_{args.augment}"
    trained_path = args.out_dir / f"pretrained_{args.family}_e{args.epochs}_s{args.seed}{suffix}.safetensors"
    random_path = args.out_dir / f"random_s{args.seed}.safetensors"
    data = f"builtin:{args.family}"

    started = time.perf_counter()
    trained = ec.pretrain(data, ec.PretrainConfig(arch=ARCH, epochs=args.epochs, augment=args.augment),
                          device="cpu", seed=args.seed)
    wall = time.perf_counter() - started
    trained.save(trained_path)
    ec.pretrain(data, ec.PretrainConfig(arch=ARCH, epochs=0), device="cpu", seed=args.seed).save(random_path)

    rows = []
    for family in FAMILIES:
        report = ec.evaluate([random_path, trained_path], f"builtin:{family}",
                             ec.EvalConfig(trigger="white-square", target_class=0), device="cpu", seed=args.seed)
        for name, row in zip(("random init (0 epochs)", f"pre-trained, {trained.report['steps']} steps"),
                             report.encoders):
            rows.append({"evaluated on": f"builtin:{family}", "encoder": name, **row.as_dict()})
        rows.append({"evaluated on": f"builtin:{family}", "encoder": "gain",
                     "acc": round(report.encoders[1].acc - report.encoders[0].acc, 2)})
    columns = [("evaluated on", "evaluated on"), ("encoder", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"),
               ("asr_nontarget", "ASR non-target %")]
    for row in rows:
        print("  ".join(f"{row.get(key, ''):>{len(header)}}" if not isinstance(row.get(key), float)
                        else f"{row[key]:>{len(header)}.2f}" for key, header in columns))
    if args.publish:
        publish(f"pretrain-probe-{args.family}", f"Pre-training pays (pre-trained on builtin:{args.family})", rows,
                columns, load=args.load,
                notes=f"{ARCH}, `--augment {args.augment}`, linear probe, white-square trigger, target class 0; "
                      f"pre-training took {wall:.1f} s wall.")


if __name__ == "__main__":
    main()
