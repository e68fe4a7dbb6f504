"""The whole chain on real CIFAR-10, through the Python API: does every step carry to natural images?

Each step runs what the command of its name runs, in-process (`import encoder_clean as ec`), on the data
read once. Steps (each output cached under --cache, so a rerun only computes what is missing):
1. the CIFAR-10 JPEG archive (`--archive`: cifar10/train/CLASS/*.jpg and cifar10/test/CLASS/*.jpg in a
   .tar.gz) unpacked and read once with `folder:` (timed), then kept as `npz:` arrays so that later runs
   do not decode 60,000 JPEGs again;
2. `pretrain` a clean encoder and its random initialisation (0 epochs);
3. `poison` it with BadEncoder and DRUPE, target class 0, references from the CIFAR-10 training split;
4. on each poisoned encoder: `purify --method ft` (the fine-tune-only baseline), the paper's setting
   (`distill --finetune ft --student warmup --loss at`) and the default `distill`;
5. `evaluate` every encoder on CIFAR-10 (linear probe; ACC, ASR, ASR over non-target images) with the
   10x10 white square and target class 0;
6. `scan` every encoder (verdict, score against the threshold).

    python benchmarks/cifar_chain.py [--archive CIFAR10_JPEG.tar.gz] [--arch resnet18-cifar-w16]
        [--pretrain-epochs 12] [--augment simclr] [--poison-epochs badencoder=1 drupe=1] [--num-references drupe=50] [--threads 2] [--cache benchmarks/cache/cifar]
        [--publish [--load TEXT]]

With --publish the table goes to benchmarks/RESULTS.md (section `cifar-chain`).

Targets (resnet18-cifar-w16 or wider, 2 CPU cores): pre-training beats random init by >= 20 ACC points
within 30 minutes; BadEncoder and DRUPE ASR >= 95% with ACC within 3 points of the clean encoder; the
default distill keeps ASR non-target within 2 points of the clean encoder's and ACC at most 2 points below
the poisoned encoder, with lower ASR than the fine-tune-only baseline; scan flags every poisoned encoder
and passes the clean and cleaned ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, TypeVar, Union

import numpy as np
import torch

import encoder_clean as ec
from encoder_clean.cli.progress import PlainProgress
from encoder_clean.errors import EncoderCleanError
from results import add_publish_arguments, publish

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
TARGET_CLASS = 0
TRIGGER = "white-square"
ATTACKS = ("badencoder", "drupe")
Defense = Union[ec.PurifyConfig, ec.DistillConfig]
DEFENSES: dict[str, Defense] = {
    "ft": ec.PurifyConfig(method="ft"),  # the fine-tune-only baseline
    "paper": ec.DistillConfig(finetune="ft", student="warmup", losses=("at",)),  # the seed paper's setting
    "distill": ec.DistillConfig(),  # the recommended recipe (`distill` with no options)
    # the recipe as it was before random-patch consistency joined it (session 16; docs/recipes.md)
    "distill-unpatched": ec.DistillConfig(options=("patch_prob=0",), finetune_options=("patch_prob=0",)),
    # the recipe with a 150-epoch teacher fine-tune (RESULTS.md "longer-ft"; docs/recipes.md says why it is not the default)
    "distill-long-ft": ec.DistillConfig(finetune_options=("epochs=150",)),
}
Result = TypeVar("Result")


def defend(encoder: Path, data: ec.DataLike, defense: Defense, **run) -> ec.TrainResult:
    if isinstance(defense, ec.PurifyConfig):
        return ec.purify(encoder, data, defense, **run)
    return ec.distill(encoder, data, defense, **run)


class Runner:
    """Runs the steps through the API on one device, records their wall times, and writes each step's
    progress to LOGS/<label>.log (`tail -f` it to follow a long step)."""

    def __init__(self, device: str, logs: Path):
        self.device = device
        self.logs = logs
        self.seconds: dict[str, float] = {}
        self.cached_only = False

    def __call__(self, label: str, step: Callable[..., Result]) -> Result:
        """`step(device=..., progress=...)`, timed; exits with the step's message if it fails."""
        started = time.perf_counter()
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{label.replace(' ', '_')}.log"
        with open(log, "w") as stream:
            try:
                result = step(device=self.device, progress=PlainProgress(stream))
            except EncoderCleanError as error:
                sys.exit(f"{label} failed: {error} (progress in {log})")
        self.seconds[label] = round(time.perf_counter() - started, 1)
        print(f"  {label}: {self.seconds[label]:.1f} s", flush=True)
        return result

    def cached(self, label: str, out: Path, make: Callable[..., ec.TrainResult]) -> Path | None:
        """Make and save `out` unless a previous run left it (under `cached_only`: None instead of making it).
        Saved through a temporary name, so that a run stopped midway or one beside it sees no half-written file."""
        if out.exists():
            print(f"  {label}: cached {out.name}")
            return out
        if self.cached_only:
            print(f"  {label}: not made yet, left out")
            return None
        partial = out.with_name(f"{out.stem}.partial{out.suffix}")
        self(label, lambda **run: make(**run).save(partial))
        partial.replace(out)
        return out


def unpacked(archive: Path, cache: Path) -> Path:
    """The CIFAR-10 ImageFolder (cifar10/train, cifar10/test) under `cache`, unpacked from `archive` once."""
    folder = cache / "cifar10"
    if not (folder / "train").is_dir():
        if not archive.exists():
            sys.exit(f"{archive} is missing: pass --archive PATH to the CIFAR-10 JPEG archive")
        print(f"unpacking {archive} ...", flush=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    return folder


def prepare_data(archive: Path, cache: Path) -> tuple[str, float | None]:
    """npz arrays of CIFAR-10 under `cache`, made once from the archive through `folder:`; the spec and
    the seconds the folder took to read (None when cached)."""
    npz = cache / "cifar10-npz"
    if (npz / "train.npz").exists() and (npz / "test.npz").exists():
        return f"npz:{npz}", None
    folder = unpacked(archive, cache)
    started = time.perf_counter()
    dataset = ec.load_data(f"folder:{folder}")
    seconds = time.perf_counter() - started
    npz.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        np.savez(npz / f"{name}.npz", x=split.images.permute(0, 2, 3, 1).numpy(), y=split.labels.numpy())
    return f"npz:{npz}", seconds


def preset_value(attack: str, setting: str) -> int:
    from encoder_clean.attacks import get_attack

    return getattr(get_attack(attack).preset("fast"), setting)


def per_attack(given: list[str], setting: str, flag: str) -> dict[str, int]:
    """Each attack's value of a fast-preset `setting`, replaced by `N` (all attacks) or `ATTACK=N`."""
    values = {attack: preset_value(attack, setting) for attack in ATTACKS}
    for item in given:
        attack, _, count = item.rpartition("=")
        for name in ([attack] if attack else ATTACKS):
            if name not in values or not count.isdigit():
                sys.exit(f"{flag} {item}: expected N or ATTACK=N with ATTACK in {', '.join(ATTACKS)}")
            values[name] = int(count)
    return values


def make_encoders(args: argparse.Namespace, data: ec.DataLike, run: Runner) -> dict[str, Path]:
    """The random, clean, poisoned and defended encoders, each made unless cached: name -> file."""
    tag = f"{args.arch}_e{args.pretrain_epochs}_{args.augment}"
    pretrained = ec.PretrainConfig(arch=args.arch, epochs=args.pretrain_epochs, augment=args.augment)
    clean = run.cached("pretrain", args.cache / f"clean_{tag}.safetensors",
                       lambda **step: ec.pretrain(data, pretrained, **step))
    random = run.cached("random init", args.cache / f"random_{args.arch}.safetensors",
                        lambda **step: ec.pretrain(data, ec.PretrainConfig(arch=args.arch, epochs=0), **step))
    encoders = {"random init": random, "clean": clean}
    for attack in args.attacks:
        epochs, references = args.poison_epochs[attack], args.num_references[attack]
        attacked = ec.PoisonConfig(attack=attack, trigger=TRIGGER, target_class=TARGET_CLASS, epochs=epochs,
                                   num_references=references)
        # the number of references is in the name only where it differs from the preset's (older caches)
        named = "" if references == preset_value(attack, "num_references") else f"_r{references}"
        poisoned = run.cached(f"poison {attack}", args.cache / f"{attack}_{tag}_p{epochs}{named}.safetensors",
                              lambda **step: ec.poison(clean, data, attacked, **step))
        if poisoned is None:
            continue
        encoders[attack] = poisoned
        for name in args.defenses:
            out = args.cache / f"{poisoned.stem}_{name}.safetensors"
            encoders[f"{attack} + {name}"] = run.cached(
                f"{name} on {attack}", out, lambda **step: defend(poisoned, data, DEFENSES[name], **step))
    return {name: path for name, path in encoders.items() if path is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--augment", default="simclr", help="pretrain's augmentation preset")
    parser.add_argument("--poison-epochs", nargs="+", default=[], metavar="[ATTACK=]N",
                        help="poison epochs for every attack (N) or one (ATTACK=N); default: the fast preset's")
    parser.add_argument("--num-references", nargs="+", default=[], metavar="[ATTACK=]N",
                        help="target-class reference images per attack, as --poison-epochs; default: the preset's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attacks", nargs="*", choices=ATTACKS, default=list(ATTACKS),
                        help="attacks to run (none: only the clean and random encoders, for pre-training figures)")
    parser.add_argument("--defenses", nargs="*", choices=list(DEFENSES), default=list(DEFENSES),
                        help="defenses to run on each poisoned encoder (none: only the attacks)")
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--make-only", action="store_true",
                        help="make (or find cached) the encoders and stop: no evaluate, no scan (to make them in "
                             "parallel processes sharing --cache, then evaluate them all in one run)")
    parser.add_argument("--cached-only", action="store_true",
                        help="make nothing: evaluate and scan the encoders earlier runs left in --cache")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "cache" / "cifar")
    parser.add_argument("--json-out", type=Path, default=None, help="also write every figure here")
    add_publish_arguments(parser)
    parser.add_argument("--section", default="cifar-chain", help="the RESULTS.md section --publish writes")
    args = parser.parse_args()
    args.poison_epochs = per_attack(args.poison_epochs, "epochs", "--poison-epochs")
    args.num_references = per_attack(args.num_references, "num_references", "--num-references")
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    run = Runner(args.device, args.cache / "logs")

    spec, folder_seconds = prepare_data(args.archive, args.cache)
    if folder_seconds is not None:
        print(f"read CIFAR-10 with folder: in {folder_seconds:.1f} s")
    data = ec.load_data(spec)  # once, for every step
    run.cached_only = args.cached_only
    encoders = make_encoders(args, data, run)
    if args.make_only:
        if args.json_out:
            args.json_out.write_text(json.dumps({"encoders": {k: str(v) for k, v in encoders.items()},
                                                 "seconds": run.seconds}, indent=2))
        return
    evaluated = ec.EvalConfig(trigger=TRIGGER, target_class=TARGET_CLASS)
    report = run("evaluate", lambda **step: ec.evaluate(list(encoders.values()), data, evaluated, **step))
    rows = {name: result.as_dict() for name, result in zip(encoders, report.encoders)}
    if not args.skip_scan:
        scanned = run("scan", lambda **step: [ec.scan(path, data, **step) for path in encoders.values()])
        for name, result in zip(encoders, scanned):
            rows[name].update(verdict=result.verdict, score=result.score, threshold=result.threshold)

    step_of = {"random init": "random init", "clean": "pretrain", **{a: f"poison {a}" for a in ATTACKS},
               **{f"{a} + {d}": f"{d} on {a}" for a in ATTACKS for d in DEFENSES}}
    table = [{"encoder": name, "acc": row["acc"], "asr": row["asr"], "asr_nontarget": row["asr_nontarget"],
              "verdict": row.get("verdict", "-"), "score": row.get("score"), "threshold": row.get("threshold"),
              "seconds": run.seconds.get(step_of[name], "cached")} for name, row in rows.items()]
    poisoned_for = ", ".join(f"{attack} {args.poison_epochs[attack]} epoch(s) with {args.num_references[attack]} "
                             f"references" for attack in args.attacks)
    title = (f"Real CIFAR-10: {args.arch}, pretrain {args.pretrain_epochs} epochs ({args.augment}), poison "
             f"{poisoned_for or 'none'}, target class {TARGET_CLASS}, {TRIGGER}, linear probe")
    print(f"\n{title}, {args.threads} threads, device {args.device}")
    print(f"{'encoder':<22}{'ACC':>8}{'ASR':>8}{'ASR-nt':>8}{'scan':>10}{'score':>8}{'seconds':>9}")
    for row in table:
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        print(f"{row['encoder']:<22}{row['acc']:>8.2f}{row['asr']:>8.2f}{row['asr_nontarget']:>8.2f}"
              f"{row['verdict']:>10}{score:>8}{row['seconds']:>9}")
    other = {label: seconds for label, seconds in run.seconds.items() if label in ("evaluate", "scan")}
    print(", ".join(f"{label} {seconds:.0f} s" for label, seconds in other.items()))
    if args.publish:
        notes = ("seconds: wall time of the step that made the encoder (cached: made by an earlier run); "
                 + ", ".join(f"{label} of all encoders {seconds:.0f} s" for label, seconds in other.items())
                 + (f"; reading the CIFAR-10 folder took {folder_seconds:.1f} s" if folder_seconds else ""))
        publish(args.section, title, table, [("encoder", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"),
                                              ("asr_nontarget", "ASR non-target %"), ("verdict", "scan"),
                                              ("score", "scan score"), ("threshold", "threshold"),
                                              ("seconds", "seconds")],
                notes=notes, load=args.load)
    if args.json_out:
        args.json_out.write_text(json.dumps({"settings": vars(args) | {"archive": str(args.archive),
                                                                      "cache": str(args.cache), "json_out": None},
                                             "rows": rows, "seconds": run.seconds}, indent=2, default=str))


if __name__ == "__main__":
    main()
