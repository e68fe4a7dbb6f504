"""Can `scan` tell backdoored encoders from clean ones? AUROC, TPR and FPR over a zoo of small encoders.

Builds (or reuses, under benchmarks/cache/zoo/) with the real commands:
- clean encoders of different seeds, architectures and built-in families (`pretrain`);
- backdoored encoders from all four attacks with triggers of different sizes and positions and
  different target classes (`poison`, each from one of the clean encoders);
- a separate calibration set of clean encoders (other seeds): the threshold is calibrated on these only.
Then scans every encoder with our settings and with plain DECREE settings (`scan --method decree`), and
prints per-encoder PL1-norms and seconds, AUROC, and TPR/FPR at the shipped threshold and at the one
calibrated here.

    python benchmarks/scan_zoo.py [--jobs 2] [--methods encoder-clean decree] [--device cpu]

Targets (issue #5): AUROC >= 0.95, every DRUPE encoder detected, <= 60 s per encoder on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from attacks import cli

from encoder_clean.scan.verdict import calibrate_threshold, get_preset

SMALL = "resnet18-cifar-w16"
OTHER = {"shapes": "glyphs", "glyphs": "shapes"}


@dataclass(frozen=True)
class Member:
    name: str
    role: str  # "clean", "backdoor" or "calibration"
    command: tuple[str, ...]  # the command that makes it, without --out
    parent: str | None = None  # the zoo member it is poisoned from
    attack: str | None = None


def clean_member(name: str, family: str, arch: str, seed: int, role: str = "clean") -> Member:
    return Member(name, role, ("pretrain", "--data", f"builtin:{family}?train={{train}}", "--arch", arch,
                               "--epochs", "3", "--seed", str(seed)))


# The embedding attacks' `fast` preset plants a full backdoor in about 230 steps of 128 (3 epochs of
# 10,000 images); on the zoo's 4,000 images 3 epochs (93 steps) gave BadEncoder only 21% ASR, so the
# zoo runs them for 8 epochs (250 steps).
ATTACK_EPOCHS = {"badencoder": 8, "drupe": 8}


def backdoor_member(name: str, parent: str, family: str, attack: str, trigger: str, target: int) -> Member:
    epochs = ("--epochs", str(ATTACK_EPOCHS[attack])) if attack in ATTACK_EPOCHS else ()
    return Member(name, "backdoor", ("poison", "{parent}", "--attack", attack, "--trigger", trigger,
                                     "--target-class", str(target), "--data", f"builtin:{family}?train={{train}}",
                                     "--reference-data", f"builtin:{OTHER[family]}", *epochs), parent, attack)


CLEAN = [
    clean_member("clean-shapes-s0", "shapes", SMALL, 0),
    clean_member("clean-shapes-s1", "shapes", SMALL, 1),
    clean_member("clean-shapes-s2", "shapes", SMALL, 2),
    clean_member("clean-glyphs-s0", "glyphs", SMALL, 0),
    clean_member("clean-glyphs-s1", "glyphs", SMALL, 1),
    clean_member("clean-shapes-w8-s0", "shapes", "resnet10-cifar-w8", 0),
    clean_member("clean-glyphs-w8-s0", "glyphs", "resnet10-cifar-w8", 0),
    clean_member("clean-shapes-w32-s0", "shapes", "resnet18-cifar-w32", 0),
]
CALIBRATION = [
    clean_member("calib-shapes-s10", "shapes", SMALL, 10, "calibration"),
    clean_member("calib-glyphs-s10", "glyphs", SMALL, 10, "calibration"),
    clean_member("calib-shapes-w8-s10", "shapes", "resnet10-cifar-w8", 10, "calibration"),
]
# (attack, trigger, target class, parent): sizes 4 to 10 pixels, five positions, five target classes
BACKDOORS = [
    ("badencoder", "white-square", 0, "clean-shapes-s0"),
    ("badencoder", "checkerboard:6@0,0", 3, "clean-shapes-s1"),
    ("badencoder", "noise-patch:8@12,12", 5, "clean-glyphs-s0"),
    ("badencoder", "white-square:4@2,26", 7, "clean-shapes-w8-s0"),
    ("drupe", "white-square", 0, "clean-shapes-s0"),
    ("drupe", "checkerboard:6@0,0", 2, "clean-shapes-s2"),
    ("drupe", "noise-patch:8@12,12", 4, "clean-glyphs-s1"),
    ("drupe", "white-square:4@26,2", 6, "clean-glyphs-w8-s0"),
    ("bassl", "white-square", 0, "clean-shapes-s0"),
    ("bassl", "checkerboard:6@0,0", 3, "clean-glyphs-s0"),
    ("bassl", "noise-patch:8@12,12", 1, "clean-shapes-s1"),
    ("bassl", "white-square:4@2,26", 8, "clean-shapes-s2"),
    ("ctrl", "ctrl", 0, "clean-shapes-s0"),
    ("ctrl", "ctrl", 4, "clean-glyphs-s1"),
    ("ctrl", "ctrl", 9, "clean-shapes-s2"),
    ("ctrl", "ctrl", 2, "clean-glyphs-s0"),
]


def family_of(parent: str) -> str:
    return parent.split("-")[1]


def zoo() -> list[Member]:
    poisoned = [backdoor_member(f"{attack}-{trigger.replace(':', '').replace('@', '-at-').replace(',', '-')}-t{target}-{parent}",
                                parent, family_of(parent), attack, trigger, target)
                for attack, trigger, target, parent in BACKDOORS]
    return CLEAN + CALIBRATION + poisoned


def run(args: list[str], device: str) -> dict:
    return cli(*args, device=device, ok=(0, 1))  # scan exits 1 on a backdoor verdict


class Zoo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.folder = args.out_dir
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, member: Member) -> Path:
        return self.folder / f"{member.name}.safetensors"

    def build(self, member: Member) -> float:
        out = self.path(member)
        timing = out.with_suffix(".seconds")
        if not out.exists():
            command = [part.format(train=self.args.train_images,
                                   parent=str(self.path(next(m for m in zoo() if m.name == member.parent)))
                                   if member.parent else "") for part in member.command]
            started = time.perf_counter()
            run([*command, "--out", str(out)], self.args.device)
            timing.write_text(f"{time.perf_counter() - started:.1f}")
            print(f"built {member.name} in {timing.read_text()} s", flush=True)
        return float(timing.read_text())

    def asr(self, member: Member) -> dict:
        """ACC/ASR of a backdoored member on the downstream family (its references' family)."""
        cached = self.folder / f"{member.name}.evaluate.json"
        if not cached.exists():
            downstream = f"builtin:{OTHER[family_of(member.parent)]}?train=3000&test=1000"
            report = run(["evaluate", str(self.path(member)), "--data", downstream], self.args.device)
            cached.write_text(json.dumps(report["encoders"][0], indent=2))
        return json.loads(cached.read_text())

    def scan(self, member: Member, method: str) -> dict:
        cached = self.folder / f"{member.name}.scan-{method}.json"
        if not cached.exists() or self.args.rescan:
            report = run(["scan", str(self.path(member)), "--method", method, "--data", "builtin:shapes"],
                         self.args.device)
            cached.write_text(json.dumps(report["encoders"][0], indent=2))
            print(f"scanned {member.name} ({method}): PL1 {report['encoders'][0]['pl1_norm']:.4f} "
                  f"in {report['encoders'][0]['seconds']:.1f} s", flush=True)
        return json.loads(cached.read_text())


def auroc(positive: list[float], negative: list[float]) -> float:
    """Probability that a random backdoored encoder scores above a random clean one (ties count half)."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def rates(rows: list[dict], threshold: float) -> tuple[float, float]:
    backdoors = [r for r in rows if r["role"] == "backdoor"]
    cleans = [r for r in rows if r["role"] == "clean"]
    tpr = sum(r["pl1_norm"] < threshold for r in backdoors) / max(1, len(backdoors))
    fpr = sum(r["pl1_norm"] < threshold for r in cleans) / max(1, len(cleans))
    return 100 * tpr, 100 * fpr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["encoder-clean", "decree"])
    parser.add_argument("--train-images", type=int, default=4000, help="pre-training/poisoning images per encoder")
    parser.add_argument("--jobs", type=int, default=1, help="commands run side by side (one CPU thread each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache/zoo"))
    parser.add_argument("--rescan", action="store_true", help="scan again even when a result is cached")
    parser.add_argument("--build-only", action="store_true", help="build the zoo, scan nothing")
    parser.add_argument("--with-asr", action="store_true",
                        help="also evaluate each backdoored encoder's ACC/ASR downstream (linear probe)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each command one CPU thread unless told otherwise
    store = Zoo(args)
    members = zoo()
    with ThreadPoolExecutor(args.jobs) as pool:  # parents first, then everything poisoned from them
        build_seconds = dict(zip([m.name for m in members if not m.parent],
                                 pool.map(store.build, [m for m in members if not m.parent])))
        build_seconds.update(zip([m.name for m in members if m.parent],
                                 pool.map(store.build, [m for m in members if m.parent])))
        if args.build_only:
            return
        jobs = [(m, method) for method in args.methods for m in members]
        scans = list(pool.map(lambda job: store.scan(*job), jobs))
        backdoored = [m for m in members if m.role == "backdoor"]
        asr = dict(zip([m.name for m in backdoored], pool.map(store.asr, backdoored))) if args.with_asr else {}

    rows = [{"name": m.name, "role": m.role, "attack": m.attack or "-", "method": method,
             "pl1_norm": s["pl1_norm"], "similarity": s["similarity"], "seconds": s["seconds"],
             "build_seconds": build_seconds[m.name]} for (m, method), s in zip(jobs, scans)]
    print(f"\nzoo: {sum(m.role == 'clean' for m in members)} clean, {sum(m.role == 'backdoor' for m in members)} "
          f"backdoored, {sum(m.role == 'calibration' for m in members)} calibration encoders; shadow data "
          f"builtin:shapes (1000 images); device {args.device}")
    print("\n| encoder | role | ACC / ASR / ASR non-target % | " + " | ".join(f"{m} PL1 (s)" for m in args.methods) + " |")
    print("| --- | --- | ---: |" + " ---: |" * len(args.methods))
    for member in members:
        cells = [next(f"{r['pl1_norm']:.4f} ({r['seconds']:.0f})" for r in rows
                      if r["name"] == member.name and r["method"] == method) for method in args.methods]
        effect = asr.get(member.name)
        attack = f"{effect['acc']:.1f} / {effect['asr']:.1f} / {effect['asr_nontarget']:.1f}" if effect else "-"
        print(f"| {member.name} | {member.role} | {attack} | " + " | ".join(cells) + " |")

    print("\n| method | AUROC | shipped threshold | TPR % | FPR % | calibrated threshold | TPR % | FPR % "
          "| DRUPE detected | mean s / encoder | max s |")
    print("| --- |" + " ---: |" * 10)
    summary = {}
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        score = [1 - r["pl1_norm"] for r in mine]
        positive = [s for s, r in zip(score, mine) if r["role"] == "backdoor"]
        negative = [s for s, r in zip(score, mine) if r["role"] == "clean"]
        shipped = get_preset(method).threshold
        calibrated = calibrate_threshold([r["pl1_norm"] for r in mine if r["role"] == "calibration"])
        drupe = [r for r in mine if r["attack"] == "drupe"]
        found = sum(r["pl1_norm"] < shipped for r in drupe)
        seconds = [r["seconds"] for r in mine]
        summary[method] = {"auroc": auroc(positive, negative), "shipped": shipped, "calibrated": calibrated}
        print(f"| {method} | {auroc(positive, negative):.3f} | {shipped:.4f} | {rates(mine, shipped)[0]:.1f} | "
              f"{rates(mine, shipped)[1]:.1f} | {calibrated:.4f} | {rates(mine, calibrated)[0]:.1f} | "
              f"{rates(mine, calibrated)[1]:.1f} | {found}/{len(drupe)} | {sum(seconds) / len(seconds):.1f} | "
              f"{max(seconds):.1f} |")
    for method in args.methods:
        print(f"\n{method}: detection per attack at the shipped threshold")
        mine = [r for r in rows if r["method"] == method and r["role"] == "backdoor"]
        for attack in sorted({r["attack"] for r in mine}):
            hits = [r for r in mine if r["attack"] == attack]
            print(f"  {attack}: {sum(r['pl1_norm'] < summary[method]['shipped'] for r in hits)}/{len(hits)}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
