"""Does `poison` plant real backdoors? ACC/ASR of the clean and the poisoned encoder for every attack.

Runs what `pretrain`, `poison` and `evaluate` run, through the Python API in-process: pre-trains (or
reuses) a clean encoder on one built-in family, poisons it with each attack (its `fast` preset) using
target-class references from the downstream family, and evaluates the clean and the poisoned encoders on
the downstream family with the attack's trigger (linear probe, target class 0 unless `--target-class`
says otherwise). Downstream on the other family is the papers' cross-dataset setting; on the same
family, the references come from the pre-training data itself.

    python benchmarks/attacks.py [--pretrain-family shapes] [--downstream glyphs shapes]
        [--attacks badencoder drupe bassl ctrl] [--arch resnet18-cifar-w16] [--device cpu]
        [--seeds 0 1 2] [--trigger bassl=checkerboard] [--option bassl:placement=random] [--train 2000]
        [--publish [--load TEXT]]

With --publish the table goes to benchmarks/RESULTS.md (section `attacks`).

Targets: BadEncoder and DRUPE ASR >= 95%, BASSL and CTRL ASR >= 80%, ACC within 3 points of
the clean encoder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import encoder_clean as ec
from results import add_publish_arguments, publish

FAMILIES = ("shapes", "glyphs")
ATTACKS = ("badencoder", "drupe", "bassl", "ctrl")
TRIGGERS = {"badencoder": "white-square", "drupe": "white-square", "bassl": "white-square", "ctrl": "ctrl"}
ASR_TARGET = {"badencoder": 95.0, "drupe": 95.0, "bassl": 80.0, "ctrl": 80.0}
ACC_TOLERANCE = 3.0
TARGET_CLASS = 0  # the default target class (defense_study.py's)


def data(family: str, args: argparse.Namespace) -> str:
    train = getattr(args, "train", None)
    return f"builtin:{family}" + (f"?train={train}" if train else "")


def clean_encoder(args: argparse.Namespace) -> Path:
    train = getattr(args, "train", None)
    suffix = ("" if args.arch == "resnet18-cifar-w16" else f"_{args.arch}") + (f"_n{train}" if train else "")
    path = args.out_dir / f"pretrained_{args.pretrain_family}_e{args.pretrain_epochs}_s0{suffix}.safetensors"
    if not path.exists():
        started = time.perf_counter()
        ec.pretrain(data(args.pretrain_family, args), ec.PretrainConfig(arch=args.arch, epochs=args.pretrain_epochs),
                    device=args.device).save(path)
        print(f"pre-trained {path.name} in {time.perf_counter() - started:.1f} s")
    else:
        print(f"reusing the clean encoder {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-family", choices=FAMILIES, default="shapes")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--downstream", nargs="+", choices=FAMILIES, default=None,
                        help="downstream families (default: the other family, then the same one)")
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache"))
    parser.add_argument("--target-class", type=int, default=TARGET_CLASS,
                        help="the attacks' target class; run two to check that a backdoor follows its target "
                             "rather than a class the trigger lands in by itself")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="poison once per seed (the victim's SimCLR seed for BASSL/CTRL)")
    parser.add_argument("--trigger", action="append", default=[], metavar="ATTACK=SPEC",
                        help="use SPEC as ATTACK's trigger (default: " +
                        ", ".join(f"{a} {t}" for a, t in TRIGGERS.items()) + ")")
    parser.add_argument("--option", action="append", default=[], metavar="ATTACK:KEY=VALUE",
                        help="set KEY=VALUE in ATTACK's settings (as `poison --option` does)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--train", type=int, default=None, help="training images per built-in family (default: all)")
    add_publish_arguments(parser)
    args = parser.parse_args()
    for item, separator in [*((t, "=") for t in args.trigger), *((o, ":") for o in args.option)]:
        if item.partition(separator)[0] not in ATTACKS or not item.partition(separator)[2]:
            parser.error(f"{item!r}: expected ATTACK{separator}... with ATTACK one of {', '.join(ATTACKS)}")
    triggers = {**TRIGGERS, **dict(item.split("=", 1) for item in args.trigger)}
    options: dict[str, list[str]] = {attack: [] for attack in ATTACKS}
    for item in args.option:
        attack, setting = item.split(":", 1)
        options[attack].append(setting)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    other = [f for f in FAMILIES if f != args.pretrain_family][0]
    downstream = args.downstream or [other, args.pretrain_family]
    clean = clean_encoder(args)

    rows = []
    for family in downstream:
        for seed in args.seeds:
            poisoned: dict[str, tuple[Path, float]] = {}
            for attack in args.attacks:
                suffix = ("" if seed == 0 else f"_s{seed}") + ("" if args.target_class == 0 else f"_t{args.target_class}")
                out = args.out_dir / f"poisoned_{attack}_{args.pretrain_family}_to_{family}_{args.arch}{suffix}.safetensors"
                started = time.perf_counter()
                config = ec.PoisonConfig(attack=attack, trigger=triggers[attack], target_class=args.target_class,
                                         reference_data=data(family, args), options=options[attack])
                ec.poison(clean, data(args.pretrain_family, args), config, device=args.device, seed=seed).save(out)
                poisoned[attack] = (out, time.perf_counter() - started)
            for trigger in sorted({triggers[a] for a in args.attacks}):
                attacks = [a for a in args.attacks if triggers[a] == trigger]
                report = ec.evaluate([clean, *(poisoned[a][0] for a in attacks)], data(family, args),
                                     ec.EvalConfig(trigger=trigger, target_class=args.target_class), device=args.device)
                base, *results = report.as_dict()["encoders"]
                for attack, result in zip(attacks, results):
                    rows.append({"downstream": family, "attack": attack, "trigger": trigger, "seed": seed,
                                 "clean_acc": base["acc"], "clean_asr": base["asr"], "acc": result["acc"],
                                 "asr": result["asr"], "asr_nontarget": result["asr_nontarget"],
                                 "poison_seconds": round(poisoned[attack][1], 1)})

    print(f"\n{args.arch}, pre-trained on builtin:{args.pretrain_family}, target class {args.target_class}, "
          f"linear probe, device {args.device}")
    header = (f"{'downstream':<11}{'attack':<11}{'trigger':<16}{'seed':>5}{'clean ACC':>10}{'clean ASR':>10}{'ACC':>8}"
              f"{'dACC':>7}{'ASR':>8}{'ASR-nt':>8}{'poison s':>10}  targets")
    print(header)
    for row in rows:
        drop = row["acc"] - row["clean_acc"]
        met = row["asr"] >= ASR_TARGET[row["attack"]] and abs(drop) <= ACC_TOLERANCE
        print(f"{row['downstream']:<11}{row['attack']:<11}{row['trigger']:<16}{row['seed']:>5}{row['clean_acc']:>10.2f}"
              f"{row['clean_asr']:>10.2f}{row['acc']:>8.2f}{drop:>+7.2f}{row['asr']:>8.2f}"
              f"{row['asr_nontarget']:>8.2f}{row['poison_seconds']:>10.1f}  {'met' if met else 'MISSED'}")
    if len(args.seeds) > 1:
        print(f"\nover seeds {' '.join(map(str, args.seeds))}:")
        for family in downstream:
            for attack in args.attacks:
                group = [r for r in rows if r["downstream"] == family and r["attack"] == attack]
                mean = {key: sum(r[key] for r in group) / len(group) for key in ("acc", "asr", "asr_nontarget")}
                met = sum(r["asr"] >= ASR_TARGET[attack] and abs(r["acc"] - r["clean_acc"]) <= ACC_TOLERANCE
                          for r in group)
                print(f"{family:<11}{attack:<11}mean ACC {mean['acc']:.2f}  ASR {mean['asr']:.2f}  "
                      f"ASR-nt {mean['asr_nontarget']:.2f}  targets met in {met}/{len(group)} seeds")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    if args.publish:
        publish_rows(rows, args)


def publish_rows(rows: list[dict], args: argparse.Namespace) -> None:
    for row in rows:
        row["dacc"] = round(row["acc"] - row["clean_acc"], 2)
        row["targets"] = "met" if (row["asr"] >= ASR_TARGET[row["attack"]]
                                   and abs(row["dacc"]) <= ACC_TOLERANCE) else "missed"
    columns = [("downstream", "downstream"), ("attack", "attack"), ("trigger", "trigger"), ("seed", "seed"),
               ("clean_acc", "clean ACC"), ("clean_asr", "clean ASR"), ("acc", "ACC"), ("dacc", "dACC"),
               ("asr", "ASR"), ("asr_nontarget", "ASR non-target"), ("poison_seconds", "poison s"),
               ("targets", "targets")]
    publish("attacks", "Attacks (`poison`)", rows, columns, load=args.load,
            notes=f"{args.arch} pre-trained on builtin:{args.pretrain_family} for {args.pretrain_epochs} epochs, "
                  f"target class {args.target_class}, linear probe, device {args.device}.")


if __name__ == "__main__":
    main()
