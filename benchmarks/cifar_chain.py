"""The whole chain on real CIFAR-10, through the real commands: does every step carry to natural images?

Steps (each output cached under --cache, so a rerun only computes what is missing):
1. the CIFAR-10 archive (../shared/data/cifar10-jpg.tar.gz) unpacked and read once with `folder:` (timed),
   then kept as `npz:` arrays so that the later commands do not decode 60,000 JPEGs each;
2. `pretrain` a clean encoder and its random initialisation (`--epochs 0`);
3. `poison` it with BadEncoder and DRUPE, target class 0, references from the CIFAR-10 training split;
4. on each poisoned encoder: `purify --method ft` (the fine-tune-only baseline), the paper's setting
   (`distill --finetune ft --student warmup --loss at`) and the default `distill`;
5. `evaluate` every encoder on CIFAR-10 (linear probe; ACC, ASR, ASR over non-target images) with the
   10x10 white square and target class 0;
6. `scan` every encoder (verdict, score against the threshold).

    python benchmarks/cifar_chain.py [--archive ../shared/data/cifar10-jpg.tar.gz] [--arch resnet18-cifar-w16]
        [--pretrain-epochs 12] [--augment simclr] [--poison-epochs 1] [--threads 2] [--cache benchmarks/cache/cifar]

Targets (resnet18-cifar-w16 or wider, 2 CPU cores): pre-training beats random init by >= 20 ACC points
within 30 minutes; BadEncoder and DRUPE ASR >= 95% with ACC within 3 points of the clean encoder; the
default distill keeps ASR non-target within 2 points of the clean encoder's and ACC at most 2 points below
the poisoned encoder, with lower ASR than the fine-tune-only baseline; scan flags every poisoned encoder
and passes the clean and cleaned ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
TARGET_CLASS = 0
TRIGGER = "white-square"
ATTACKS = ("badencoder", "drupe")
# name -> the command after the encoder argument (without --data, --out)
DEFENSES = {
    "ft": ("purify", "--method", "ft"),
    "paper": ("distill", "--finetune", "ft", "--student", "warmup", "--loss", "at"),
    "distill": ("distill",),
}


class Runner:
    """Runs real `encoder-clean` commands with a fixed thread count and records their wall times."""

    def __init__(self, threads: int, device: str, logs: Path):
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.device = device
        self.logs = logs
        self.seconds: dict[str, float] = {}

    def __call__(self, label: str, *args: str, ok: tuple[int, ...] = (0,)) -> dict:
        """Run one command; its progress lines go to LOGS/<label>.log (`tail -f` it to follow a long step)."""
        started = time.perf_counter()
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{label.replace(' ', '_')}.log"
        with open(log, "w") as stderr:
            result = subprocess.run([sys.executable, "-m", "encoder_clean", *args, "--device", self.device,
                                     "--json", "-"], stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env)
        if result.returncode not in ok:
            sys.exit(f"{label} failed ({result.returncode}): {' '.join(args)}\n{log.read_text()[-3000:]}")
        self.seconds[label] = round(time.perf_counter() - started, 1)
        print(f"  {label}: {self.seconds[label]:.1f} s", flush=True)
        return json.loads(result.stdout)

    def cached(self, label: str, out: Path, *args: str) -> Path:
        """Make `out` with the command unless a previous run left it."""
        if out.exists():
            print(f"  {label}: cached {out.name}")
            return out
        self(label, *args, "--out", str(out))
        return out


def prepare_data(archive: Path, cache: Path, threads: int) -> tuple[str, float | None]:
    """npz arrays of CIFAR-10 under `cache`, made once from the archive through `folder:`; the spec and
    the seconds the folder took to read (None when cached)."""
    npz = cache / "cifar10-npz"
    if (npz / "train.npz").exists() and (npz / "test.npz").exists():
        return f"npz:{npz}", None
    if not archive.exists():
        sys.exit(f"{archive} is missing: pass --archive PATH to the CIFAR-10 JPEG archive")
    folder = cache / "cifar10"
    if not (folder / "train").is_dir():
        print(f"unpacking {archive} ...", flush=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    import torch  # the library, in-process, only for this one-off conversion

    torch.set_num_threads(threads)
    from encoder_clean.data.specs import load_data

    started = time.perf_counter()
    dataset = load_data(f"folder:{folder}")
    seconds = time.perf_counter() - started
    npz.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        np.savez(npz / f"{name}.npz", x=split.images.permute(0, 2, 3, 1).numpy(), y=split.labels.numpy())
    return f"npz:{npz}", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--augment", default="simclr", help="pretrain's augmentation preset")
    parser.add_argument("--poison-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--defenses", nargs="+", choices=list(DEFENSES), default=list(DEFENSES))
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "cache" / "cifar")
    parser.add_argument("--json-out", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--publish", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--load", default="", help="what else ran on the machine meanwhile (for --publish)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    run = Runner(args.threads, args.device, args.cache / "logs")

    data, folder_seconds = prepare_data(args.archive, args.cache, args.threads)
    if folder_seconds is not None:
        print(f"read CIFAR-10 with folder: in {folder_seconds:.1f} s")
    tag = f"{args.arch}_e{args.pretrain_epochs}_{args.augment}"
    clean = run.cached("pretrain", args.cache / f"clean_{tag}.safetensors", "pretrain", "--data", data, "--arch",
                       args.arch, "--epochs", str(args.pretrain_epochs), "--augment", args.augment)
    random = run.cached("random init", args.cache / f"random_{args.arch}.safetensors", "pretrain", "--data", data,
                        "--arch", args.arch, "--epochs", "0")
    encoders: dict[str, Path] = {"random init": random, "clean": clean}
    for attack in args.attacks:
        poisoned = run.cached(f"poison {attack}", args.cache / f"{attack}_{tag}_p{args.poison_epochs}.safetensors",
                              "poison", str(clean), "--attack", attack, "--trigger", TRIGGER, "--target-class",
                              str(TARGET_CLASS), "--data", data, "--epochs", str(args.poison_epochs))
        encoders[attack] = poisoned
        for name, command in ((d, DEFENSES[d]) for d in args.defenses):
            out = args.cache / f"{poisoned.stem}_{name}.safetensors"
            encoders[f"{attack} + {name}"] = run.cached(f"{name} on {attack}", out, command[0], str(poisoned),
                                                        *command[1:], "--data", data)

    report = run("evaluate", "evaluate", *map(str, encoders.values()), "--data", data, "--trigger", TRIGGER,
                 "--target-class", str(TARGET_CLASS))
    rows = {name: dict(result) for name, result in zip(encoders, report["encoders"])}
    if not args.skip_scan:
        scanned = run("scan", "scan", *map(str, encoders.values()), "--data", data, ok=(0, 1))
        for name, result in zip(encoders, scanned["encoders"]):
            rows[name].update(verdict=result["verdict"], score=result["score"], threshold=result["threshold"])

    step_of = {"random init": "random init", "clean": "pretrain", **{a: f"poison {a}" for a in ATTACKS},
               **{f"{a} + {d}": f"{d} on {a}" for a in ATTACKS for d in DEFENSES}}
    table = [{"encoder": name, "acc": row["acc"], "asr": row["asr"], "asr_nontarget": row["asr_nontarget"],
              "verdict": row.get("verdict", "-"), "score": row.get("score"), "threshold": row.get("threshold"),
              "seconds": run.seconds.get(step_of[name], "cached")} for name, row in rows.items()]
    title = (f"Real CIFAR-10: {args.arch}, pretrain {args.pretrain_epochs} epochs ({args.augment}), poison "
             f"{args.poison_epochs} epoch(s), target class {TARGET_CLASS}, {TRIGGER}, linear probe")
    print(f"\n{title}, {args.threads} threads, device {args.device}")
    print(f"{'encoder':<22}{'ACC':>8}{'ASR':>8}{'ASR-nt':>8}{'scan':>10}{'score':>8}{'seconds':>9}")
    for row in table:
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        print(f"{row['encoder']:<22}{row['acc']:>8.2f}{row['asr']:>8.2f}{row['asr_nontarget']:>8.2f}"
              f"{row['verdict']:>10}{score:>8}{row['seconds']:>9}")
    other = {label: seconds for label, seconds in run.seconds.items() if label in ("evaluate", "scan")}
    print(", ".join(f"{label} {seconds:.0f} s" for label, seconds in other.items()))
    if args.publish:
        from results import publish

        notes = ("seconds: wall time of the step that made the encoder (cached: made by an earlier run); "
                 + ", ".join(f"{label} of all encoders {seconds:.0f} s" for label, seconds in other.items())
                 + (f"; reading the CIFAR-10 folder took {folder_seconds:.1f} s" if folder_seconds else ""))
        publish("cifar-chain", title, table, [("encoder", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"),
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
