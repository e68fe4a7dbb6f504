"""Can `scan` tell backdoored encoders from clean ones it was not tuned on? A zoo, split before scanning.

Builds (or reuses, under benchmarks/cache/zoo/) with the real commands (`pretrain`, `poison`, `distill`),
each in its own process: `--jobs` builds run side by side with one CPU thread each, and torch sets its
thread count per process, not per build:
- clean encoders: three widths of the CIFAR ResNet-18 family plus ResNet-10-w8 and a small ViT, on both
  built-in families and on a 4,000-image subset of real CIFAR-10, several seeds and lengths;
- backdoored encoders: BadEncoder and DRUPE at the `fast` preset and longer, five triggers (white square,
  checkerboard, noise patch, the BadEncoder release's npz, squares at other places and sizes), targets 0,
  3 and 7;
- the default chain: `pretrain` with its defaults, its default `poison` for four triggers and both
  attacks, and the default `distill` of the default BadEncoder output.
Every member is put in the calibration or the held-out part by a hash of its name (`split_of`), fixed
before any scan; thresholds come from the calibration part only. Each poisoned member is evaluated too
(`evaluate` on its downstream data): one whose attack did not take (non-target ASR under `ATTACK_TOOK`)
is listed as such and left out of the rates. Each method then scans every member
in-process (`encoder_clean.scan.run_scan`) on 1,000 class-balanced shadow images of the data the member
was trained on, and the script prints per-member scores, and for the held-out part AUROC and TPR/FPR at the
shipped threshold and at the calibrated one.

    python benchmarks/scan_zoo.py --build-only --jobs 2       # build the zoo (one CPU thread per job)
    python benchmarks/scan_zoo.py [--methods encoder-clean decree] [--jobs 2] [--publish [--load TEXT]]

With --publish the tables go to benchmarks/RESULTS.md (sections `scan-zoo` and `scan-zoo-members`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from encoder_clean.data.sampling import balanced_sample
from encoder_clean.data.specs import load_data
from encoder_clean.encoders.io import load_encoder
from encoder_clean.scan import run_scan, scan_config
from encoder_clean.scan.verdict import get_method
from encoder_clean.scan.windows import collapse_score, window_score
from cifar_chain import ARCHIVE, unpacked
from results import add_publish_arguments, publish

SMALL = "resnet18-cifar-w16"
OTHER = {"shapes": "glyphs", "glyphs": "shapes"}
NPZ_TRIGGER = "sample_triggers/trigger_pt_white_21_10_ap_replace.npz"
LOGO, PLUS = "sample_triggers/colour_logo_7x7.png", "sample_triggers/plus_9x9.png"
FRESH = "fresh"  # the tag of the members made in session 15 as a fresh held-out part
BLIND = "blind"  # the tag of the members made in session 19, after every earlier scan had been read
BLIND2 = "blind2"  # the tag of the members made in session 20, after the blind part had been read too
TRAIN_IMAGES = 4000  # zoo members (not the default chain) pre-train and poison on this many images
SHADOW_IMAGES = 1000
CALIBRATION, HELD_OUT = "calibration", "held-out"
# A poisoned member counts as backdoored only when its attack took: `evaluate` on its downstream data sends
# at least this share (%) of the other classes' triggered test images to the target. Fixed in session 13
# before any member was evaluated, after four ViT attacks turned out weak (7-47% ASR); a member below it
# is reported as "attack failed" and left out of AUROC, TPR and FPR, since no verdict on it is wrong.
ATTACK_TOOK = 50.0


@dataclass(frozen=True)
class Member:
    name: str
    backdoor: bool
    command: tuple[str, ...]  # the command that makes it, without --out; {parent} is the parent's path
    data: str  # the data it was trained on: scans draw their shadow images from its training split
    parent: str | None = None
    attack: str | None = None
    tags: tuple[str, ...] = field(default=())


def downstream_of(member: Member) -> str:
    """The data a poisoned member's attack aimed at: its --reference-data, else its --data."""
    command = member.command
    return command[command.index("--reference-data") + 1] if "--reference-data" in command else member.data


def split_of(name: str) -> str:
    """A third of the zoo calibrates, by a hash of the name alone (decided before any result is seen)."""
    return CALIBRATION if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 3 == 0 else HELD_OUT


def builtin(family: str) -> str:
    return f"builtin:{family}?train={TRAIN_IMAGES}"


def cifar_spec(root: Path) -> str:
    return f"folder:{root}"


def clean(name: str, data: str, arch: str, seed: int, epochs: int = 3, extra: tuple[str, ...] = (),
          tags: tuple[str, ...] = ()) -> Member:
    return Member(name, False, ("pretrain", "--data", data, "--arch", arch, "--epochs", str(epochs), "--seed",
                                str(seed), *extra), data, tags=tags)


def short_name(trigger: str) -> str:
    """A trigger spec as it appears in member names: `checkerboard:6@0,0` -> `checkerboard6-at-0-0`, a file
    by its stem and place (`dir/logo.png@4,20` -> `logo-at-4-20`)."""
    body, _, place = trigger.partition("@")
    body = body.split("/")[-1].split(".")[0].replace(":", "")
    return body + (f"-at-{place.replace(',', '-')}" if place else "")


def poisoned(name: str, parent: Member, attack: str, trigger: str, target: int, epochs: int,
             reference: str, tags: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Member:
    return Member(name, True, ("poison", "{parent}", "--attack", attack, "--trigger", trigger, "--target-class",
                               str(target), "--data", parent.data, "--reference-data", reference, "--epochs",
                               str(epochs), *extra), parent.data, parent.name, attack, tags)


def zoo(cifar: str) -> list[Member]:
    members = [  # cheapest first: the build runs in this order, each parent followed by its children
        clean("clean-shapes-w16-s0", builtin("shapes"), SMALL, 0),
        clean("clean-shapes-w16-s1", builtin("shapes"), SMALL, 1),
        clean("clean-glyphs-w16-s0", builtin("glyphs"), SMALL, 0),
        clean("clean-shapes-w8-s0", builtin("shapes"), "resnet10-cifar-w8", 0),
        clean("clean-glyphs-w8-s0", builtin("glyphs"), "resnet10-cifar-w8", 0),
        clean("clean-cifar-w16-s0", cifar, SMALL, 0),
        clean("clean-shapes-w16-s2", builtin("shapes"), SMALL, 2),
        clean("clean-glyphs-w16-s1", builtin("glyphs"), SMALL, 1),
        clean("clean-shapes-vit-s0", builtin("shapes"), "vit-p4-d4-w64", 0),
        clean("clean-shapes-w16-s3-e6", builtin("shapes"), SMALL, 3, epochs=6),
        clean("clean-cifar-w8-s0", cifar, "resnet10-cifar-w8", 0),
        clean("clean-glyphs-vit-s1", builtin("glyphs"), "vit-p4-d4-w64", 1),
        clean("clean-cifar-w16-s1-e6", cifar, SMALL, 1, epochs=6),
        clean("clean-glyphs-w16-s2-e6", builtin("glyphs"), SMALL, 2, epochs=6),
        clean("clean-shapes-w32-s0", builtin("shapes"), "resnet18-cifar-w32", 0),
        clean("clean-glyphs-w32-s1", builtin("glyphs"), "resnet18-cifar-w32", 1),
        clean("clean-shapes-r18-s0", "builtin:shapes?train=1000", "resnet18-cifar", 0, epochs=2),
        clean("clean-cifar-w32-s2", cifar, "resnet18-cifar-w32", 2),
        # two more ViTs (added in session 12, after a clean ViT of the held-out part was flagged): the first
        # ViTs both fell into the held-out part, so the calibration part had none
        clean("clean-shapes-vit-s1", builtin("shapes"), "vit-p4-d4-w64", 1),
        clean("clean-shapes-vit-s2", builtin("shapes"), "vit-p4-d4-w64", 2),
        # ViTs trained as benchmarks/vit_study.py found they need (added in session 13, after every attack on
        # the 3-epoch ViTs above failed to take): 40 epochs of 4,000 images (the study's 16 of 10,000) at lr 1e-3
        clean("clean-shapes-vit-e40-s3", builtin("shapes"), "vit-p4-d4-w64", 3, 40, ("--lr", "1e-3")),
        clean("clean-glyphs-vit-e40-s4", builtin("glyphs"), "vit-p4-d4-w64", 4, 40, ("--lr", "1e-3")),
        # Two more trained ViTs (session 14): both above hashed into the held-out part, so the calibration part
        # had no trained ViT. These seeds, and their children's triggers and targets below, were picked by
        # the hash of the names alone, before anything was built, so that they fall in the calibration part.
        clean("clean-shapes-vit-e40-s9", builtin("shapes"), "vit-p4-d4-w64", 9, 40, ("--lr", "1e-3")),
        clean("clean-glyphs-vit-e40-s8", builtin("glyphs"), "vit-p4-d4-w64", 8, 40, ("--lr", "1e-3")),
        # Session 15: a fresh held-out part (FRESH), made after the old held-out part had been looked at, so
        # that the shipped scan meets encoders nothing was chosen on. Names picked by hash alone, before
        # anything was built, to fall in the held-out part; three more full-width ResNet-18s (the old part's
        # one false positive is one), and two hand-drawn triggers no built-in resembles.
        clean("clean-shapes-r18-s2", "builtin:shapes?train=1000", "resnet18-cifar", 2, epochs=2, tags=(FRESH,)),
        clean("clean-glyphs-r18-s2", "builtin:glyphs?train=1000", "resnet18-cifar", 2, epochs=2, tags=(FRESH,)),
        clean("clean-glyphs-r18-s3", "builtin:glyphs?train=1000", "resnet18-cifar", 3, epochs=2, tags=(FRESH,)),
        clean("clean-cifar-w16-s5", cifar, SMALL, 5, tags=(FRESH,)),
        clean("clean-shapes-w16-s6-e2", builtin("shapes"), SMALL, 6, epochs=2, tags=(FRESH,)),
        clean("clean-glyphs-w8-s7-e6", builtin("glyphs"), "resnet10-cifar-w8", 7, epochs=6, tags=(FRESH,)),
        # Session 17: the calibration part had no barely trained full-width ResNet-18, the kind every false
        # positive of the held-out part is, so the identity limit could not be set against one. Two more,
        # trained like them; seeds picked by the hash of the names alone, so that both fall in the calibration part.
        clean("clean-shapes-r18-s4", "builtin:shapes?train=1000", "resnet18-cifar", 4, epochs=2),
        clean("clean-glyphs-r18-s10", "builtin:glyphs?train=1000", "resnet18-cifar", 10, epochs=2),
        # Session 19: a blind part (BLIND), named before anything of it was built, after the verdict's
        # erasure-or-place rule had been set on the 23 members scanned on this machine (all of them read by
        # then). Seeds from 20 on, the first whose name hashes into the held-out part; three more barely trained
        # full-width ResNet-18s, one of them on real CIFAR-10 (one epoch of its 4,000 images).
        clean("clean-shapes-r18-s20", "builtin:shapes?train=1000", "resnet18-cifar", 20, epochs=2, tags=(BLIND,)),
        clean("clean-glyphs-r18-s22", "builtin:glyphs?train=1000", "resnet18-cifar", 22, epochs=2, tags=(BLIND,)),
        clean("clean-cifar-r18-s20-e1", cifar, "resnet18-cifar", 20, epochs=1, tags=(BLIND,)),
        clean("clean-glyphs-w16-s22", builtin("glyphs"), SMALL, 22, tags=(BLIND,)),
        clean("clean-cifar-w16-s20", cifar, SMALL, 20, tags=(BLIND,)),
        clean("clean-shapes-w8-s20", builtin("shapes"), "resnet10-cifar-w8", 20, tags=(BLIND,)),
        # Session 20: a second blind part (BLIND2), named before anything of it was built or any verdict change
        # was set, after every member above had been read. Seeds from 30 on, the first whose names hash into
        # the held-out part; weighted to the kinds the shipped verdict gets wrong: two more barely trained
        # full-width ResNet-18s, three ResNet-10-w8s (two near misses in session 19), one of each on real CIFAR-10.
        clean("clean-shapes-r18-s30", "builtin:shapes?train=1000", "resnet18-cifar", 30, epochs=2, tags=(BLIND2,)),
        clean("clean-glyphs-r18-s31", "builtin:glyphs?train=1000", "resnet18-cifar", 31, epochs=2, tags=(BLIND2,)),
        clean("clean-shapes-w8-s30", builtin("shapes"), "resnet10-cifar-w8", 30, tags=(BLIND2,)),
        clean("clean-glyphs-w8-s31", builtin("glyphs"), "resnet10-cifar-w8", 31, tags=(BLIND2,)),
        clean("clean-cifar-w16-s30", cifar, SMALL, 30, tags=(BLIND2,)),
        clean("clean-cifar-w8-s30", cifar, "resnet10-cifar-w8", 30, tags=(BLIND2,)),
        # Added to the second blind part after its first twelve were scanned (three of their six attacks did not
        # take), named before any of these was built; the verdict had been committed (ae9b3bb) by then.
        clean("clean-glyphs-r18-s33", "builtin:glyphs?train=1000", "resnet18-cifar", 33, epochs=2, tags=(BLIND2,)),
    ]
    by_name = {m.name: m for m in members}

    def bd(attack: str, trigger: str, target: int, parent: str, epochs: int = 8, tag: str = "fast",
           part: str | None = None) -> Member:
        base = by_name[parent]
        short = short_name(trigger)
        family = base.data.split(":")[1].split("?")[0] if base.data.startswith("builtin") else "cifar"
        reference = f"builtin:{OTHER[family]}" if family in OTHER else base.data
        return poisoned(f"{attack}-{short}-t{target}-e{epochs}-{parent}", base, attack, trigger, target, epochs,
                        reference, (tag, part) if part else (tag,))

    # 8 epochs of 4,000 images are about the `fast` preset's step count on the default 10,000 (3 epochs);
    # 16 epochs is the stronger setting.
    members += [
        bd("badencoder", "white-square", 0, "clean-shapes-w16-s0"),
        bd("badencoder", "checkerboard:6@0,0", 3, "clean-shapes-w16-s1"),
        bd("badencoder", "noise-patch:8@12,12", 7, "clean-glyphs-w16-s0"),
        bd("badencoder", NPZ_TRIGGER, 3, "clean-shapes-w32-s0"),
        bd("badencoder", "white-square:4@2,26", 7, "clean-shapes-w8-s0"),
        bd("badencoder", "checkerboard", 0, "clean-glyphs-w16-s1", 16, "strong"),
        bd("badencoder", "white-square", 3, "clean-shapes-vit-s0"),
        bd("badencoder", "white-square", 0, "clean-cifar-w16-s0"),
        bd("badencoder", "noise-patch", 7, "clean-cifar-w8-s0", 16, "strong"),
        bd("drupe", "white-square", 7, "clean-shapes-w16-s2"),
        bd("drupe", "checkerboard:6@0,0", 0, "clean-glyphs-w16-s0"),
        bd("drupe", "noise-patch:8@12,12", 3, "clean-shapes-w16-s1"),
        bd("drupe", NPZ_TRIGGER, 0, "clean-glyphs-w8-s0"),
        bd("drupe", "white-square:4@26,2", 3, "clean-glyphs-w32-s1"),
        bd("drupe", "noise-patch", 7, "clean-shapes-w16-s3-e6", 16, "strong"),
        bd("drupe", "checkerboard", 3, "clean-glyphs-vit-s1"),
        bd("drupe", NPZ_TRIGGER, 7, "clean-cifar-w16-s1-e6", 16, "strong"),
        bd("drupe", "white-square", 0, "clean-shapes-vit-s1"),
        bd("badencoder", "checkerboard", 7, "clean-shapes-vit-s2"),
    ]
    # The fresh held-out part's attacks (session 15): new places, sizes, target classes 1, 5 and 9, and
    # the drawn triggers; the full-width ResNet-18s, trained on 1,000 images, get the stronger 16 epochs.
    members += [
        bd("badencoder", f"{LOGO}@4,20", 1, "clean-cifar-w16-s5", part=FRESH),
        bd("drupe", f"{LOGO}@20,4", 5, "clean-shapes-w16-s0", part=FRESH),
        bd("badencoder", f"{PLUS}@12,2", 9, "clean-glyphs-w8-s7-e6", part=FRESH),
        bd("drupe", f"{PLUS}@2,12", 5, "clean-glyphs-w16-s1", part=FRESH),
        bd("drupe", "noise-patch:6@20,8", 5, "clean-shapes-w16-s6-e2", part=FRESH),
        bd("badencoder", "checkerboard:8@22,22", 1, "clean-shapes-r18-s2", 16, "strong", part=FRESH),
        bd("drupe", "white-square:7@8,8", 1, "clean-glyphs-r18-s2", 16, "strong", part=FRESH),
        bd("badencoder", "noise-patch:5@14,3", 5, "clean-cifar-w32-s2", part=FRESH),
        bd("drupe", f"{LOGO}@4,20", 9, "clean-cifar-w8-s0", part=FRESH),
    ]
    # The blind part's attacks (session 19): target classes 2, 4, 6 and 8, new places and sizes (the white
    # square 6 px, not the 5 px first named, whose name hashed into the calibration part); two on parents
    # scanned before (their children were not).
    members += [
        bd("badencoder", "white-square:6@20,20", 2, "clean-glyphs-w16-s22", part=BLIND),
        bd("drupe", "checkerboard:8@4,16", 6, "clean-cifar-w16-s20", part=BLIND),
        bd("badencoder", NPZ_TRIGGER, 4, "clean-shapes-w16-s2", part=BLIND),
        bd("drupe", "noise-patch", 8, "clean-glyphs-w16-s22", part=BLIND),
        bd("badencoder", f"{LOGO}@16,6", 6, "clean-shapes-w8-s20", part=BLIND),
        bd("drupe", "white-square", 2, "clean-shapes-w16-s1", part=BLIND),
    ]
    # The second blind part's attacks (session 20): a backdoored full-width ResNet-18 (the stronger 16 epochs,
    # as the fresh part's), new places and sizes, targets 2, 4 and 8.
    members += [
        bd("badencoder", "white-square:8@3,3", 4, "clean-shapes-r18-s30", 16, "strong", part=BLIND2),
        bd("drupe", "checkerboard:5@24,4", 8, "clean-shapes-w8-s30", part=BLIND2),
        bd("badencoder", "noise-patch:7@6,22", 2, "clean-glyphs-w8-s31", part=BLIND2),
        bd("drupe", "white-square:5@22,10", 4, "clean-cifar-w16-s30", part=BLIND2),
        bd("badencoder", f"{PLUS}@10,18", 8, "clean-cifar-w8-s30", part=BLIND2),
        bd("drupe", f"{LOGO}@12,22", 2, "clean-shapes-w16-s2", part=BLIND2),
        # added with clean-glyphs-r18-s33 (see there): four more on w16 parents, on which attacks have taken
        bd("badencoder", "checkerboard:6@14,24", 6, "clean-cifar-w16-s30", part=BLIND2),
        bd("drupe", "noise-patch:6@4,4", 8, "clean-glyphs-w16-s22", part=BLIND2),
        bd("drupe", "white-square:7@24,12", 2, "clean-shapes-w16-s0", part=BLIND2),
        bd("badencoder", NPZ_TRIGGER, 4, "clean-shapes-w16-s1", part=BLIND2),
    ]
    # BadEncoder and DRUPE on the trained ViTs as the ViT study planted them: 100 references of the ViT's own
    # family for 6 epochs (with the preset's 10 references the trigger took next to those 10 images only)
    for attack, trigger, target, parent in (("badencoder", "white-square", 0, "clean-shapes-vit-e40-s3"),
                                            ("drupe", "checkerboard", 3, "clean-glyphs-vit-e40-s4"),
                                            ("drupe", "white-square", 3, "clean-shapes-vit-e40-s9"),
                                            ("badencoder", "noise-patch", 0, "clean-shapes-vit-e40-s9"),
                                            ("badencoder", "checkerboard", 3, "clean-glyphs-vit-e40-s8"),
                                            ("drupe", "checkerboard", 0, "clean-glyphs-vit-e40-s8")):
        base = by_name[parent]
        members.append(poisoned(f"{attack}-{trigger}-t{target}-e6-r100-{parent}", base, attack, trigger, target, 6,
                                base.data, ("fast",), ("--num-references", "100")))
    # The default chain: every command with its defaults (built-in shapes, 10,000 images).
    default = Member("default-clean", False, ("pretrain",), "builtin", tags=("default",))
    members.append(default)
    for attack in ("badencoder", "drupe"):
        for trigger in ("white-square", "checkerboard", "noise-patch", NPZ_TRIGGER):
            short = trigger.split("/")[-1].split(".")[0]
            members.append(Member(f"default-{attack}-{short}", True, ("poison", "{parent}", "--attack", attack,
                                                                      "--trigger", trigger), "builtin",
                                  default.name, attack, ("default",)))
    members.append(Member("default-distill", False, ("distill", "{parent}"), "builtin",
                          "default-badencoder-white-square", None, ("default", "distilled")))
    return members


def cifar_subset(source: Path, folder: Path, per_class_train: int = 400, per_class_test: int = 100) -> Path:
    """A small ImageFolder of real CIFAR-10 (links to the first files of each class of the `source` folder):
    short CPU runs."""
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for class_dir in sorted((source / split).iterdir()):
            target = folder / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(class_dir.iterdir())[:count]:
                link = target / path.name
                if not link.exists():
                    link.symlink_to(path.resolve())
    return folder


def cli(*args: str, device: str) -> dict:
    """Run one real command in its own process and return its JSON; exit with its stderr if it fails."""
    result = subprocess.run([sys.executable, "-m", "encoder_clean", *args, "--device", device, "--json", "-", "-q"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(args)}\n{result.stderr}")
    return json.loads(result.stdout)


class Zoo:
    def __init__(self, args: argparse.Namespace, members: list[Member]):
        self.args = args
        self.folder = args.out_dir
        self.folder.mkdir(parents=True, exist_ok=True)
        self.members = {m.name: m for m in members}

    def path(self, member: Member) -> Path:
        return self.folder / f"{member.name}.safetensors"

    def build(self, member: Member) -> float:
        out = self.path(member)
        timing = out.with_suffix(".seconds")
        if not out.exists():
            parent = str(self.path(self.members[member.parent])) if member.parent else ""
            command = [part.format(parent=parent) for part in member.command]
            started = time.perf_counter()
            report = cli(*command, "--out", str(out), device=self.args.device)
            out.with_suffix(".build.json").write_text(json.dumps(report, indent=2))
            timing.write_text(f"{time.perf_counter() - started:.1f}")
            print(f"built {member.name} in {timing.read_text()} s", flush=True)
        return float(timing.read_text()) if timing.exists() else float("nan")  # members built before timing was kept


def attack_asr(store: Zoo, member: Member) -> float | None:
    """A poisoned member's non-target ASR (%) from the real `evaluate` on its downstream data, with the
    trigger and target class its checkpoint records (cached as NAME.eval.json); None for clean members."""
    if not member.backdoor:
        return None
    cached = store.folder / f"{member.name}.eval.json"
    if not cached.exists():
        report = cli("evaluate", str(store.path(member)), "--data", downstream_of(member), device=store.args.device)
        cached.write_text(json.dumps(report, indent=2))
        print(f"evaluated {member.name}: ASR non-target {report['encoders'][0]['asr_nontarget']:.2f}%", flush=True)
    return float(json.loads(cached.read_text())["encoders"][0]["asr_nontarget"])


def counted(row: dict) -> bool:
    """Whether a scan row enters AUROC, TPR and FPR: clean members always, poisoned ones whose attack took."""
    return not row["backdoor"] or row["attack_asr"] >= ATTACK_TOOK


def build_all(store: Zoo, members: list[Member], jobs: int) -> None:
    """In list order, each member after its parent; `jobs` commands side by side once parents exist."""
    ordered: list[Member] = []
    for member in members:
        chain = [member]
        while chain[-1].parent:
            chain.append(store.members[chain[-1].parent])
        ordered += [m for m in reversed(chain) if m not in ordered]
    done: set[str] = set()
    with ThreadPoolExecutor(jobs) as pool:
        while len(done) < len(ordered):
            ready = [m for m in ordered if m.name not in done and (m.parent is None or m.parent in done)]
            list(pool.map(store.build, ready[:jobs]))
            done.update(m.name for m in ready[:jobs])


def shadow_for(data: str, cache: dict) -> "torch.Tensor":
    """1,000 class-balanced training images of `data` (seed 0): what `scan --data` draws."""
    if data not in cache:
        cache[data] = balanced_sample(load_data(data).train, SHADOW_IMAGES, 0).split.images
    return cache[data]


def scan_member(store: Zoo, member: Member, method: str, shadows: dict, args: argparse.Namespace) -> dict:
    cached = store.folder / f"{member.name}.scan-{method}.json"
    if args.rescan or not cached.exists():
        encoder = load_encoder(str(store.path(member)), device="cpu").encoder
        options = [o.split(":", 1)[1] for o in args.option if o.split(":", 1)[0] == method]
        outcome = run_scan(encoder, shadow_for(member.data, shadows), method=method, seed=0,
                           config=scan_config(method, options))
        cached.write_text(json.dumps(outcome.row(), indent=2))
        print(f"scanned {member.name} ({method}): score {outcome.score:.4f} in {outcome.seconds:.1f} s", flush=True)
    row = json.loads(cached.read_text())
    if method == "encoder-clean" and "offset" not in row and args.cues:
        row = {**row, **rederived_cues(store, member, row, shadows)}
    return rescored(row, method)


def rederived_cues(store: Zoo, member: Member, row: dict, shadows: dict) -> dict:
    """The fragility cues (encoder_clean/scan/fragility.py) of a window scan cached before the scan measured
    them: the best window's pattern found again as the scan finds it (the start bank on 16 images, 30 steps
    of 8), on 900 shadow images, and the cues measured on 64 others. Cached as NAME.cues.json and marked
    `cues: re-derived` in the row, since the pattern is not the scan's own."""
    import torch

    from encoder_clean.data.augment import to_float
    from encoder_clean.scan.fragility import cues, log_residual
    from encoder_clean.scan.invert import mean_pairwise_cosine
    from encoder_clean.scan.windows import WindowConfig, start_bank

    cached = store.folder / f"{member.name}.cues.json"
    if not cached.exists():
        started = time.perf_counter()
        encoder = load_encoder(str(store.path(member)), device="cpu").encoder.eval().requires_grad_(False)
        shadow, size, config = shadow_for(member.data, shadows), encoder.image_size, WindowConfig()
        top, left, side = (row["window"][key] for key in ("top", "left", "size"))
        mask = torch.zeros(1, size, size)
        mask[:, top:top + side, left:left + side] = 1
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(shadow), generator=g)
        search, held = order[:900], order[900:900 + config.eval_images]
        with torch.no_grad():
            bank = start_bank(size, config.noise_starts, g)
            tried = to_float(shadow[search[:config.start_images]], size)
            fills = (torch.tanh(bank) + 1) / 2
            agreement = [float(mean_pairwise_cosine(encoder.features((1 - mask) * tried + mask * fill))) for fill in fills]
        logit = bank[int(torch.tensor(agreement).argmax())].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([logit], lr=config.lr, betas=(0.5, 0.9))
        for _ in range(config.steps):
            images = to_float(shadow[search[torch.randint(0, len(search), (config.batch_size,), generator=g)]], size)
            loss = log_residual(encoder.features((1 - mask) * images + mask * (torch.tanh(logit) + 1) / 2).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        pattern = (torch.tanh(logit.detach()) + 1) / 2 * mask
        images = to_float(shadow[held], size)
        with torch.no_grad():
            clean = encoder.features(images).float()
            stamped = encoder.features((1 - mask) * images + pattern).float()
        offset, kept = cues(encoder, images, clean, stamped, mask, pattern)
        cached.write_text(json.dumps({"offset": round(offset, 4), "blur_kept": round(kept, 4),
                                      "seconds": round(time.perf_counter() - started, 1)}, indent=2))
        print(f"re-derived the cues of {member.name}: offset {offset:.2f}, blur kept {kept:.3f}", flush=True)
    found = json.loads(cached.read_text())
    return {"offset": found["offset"], "blur_kept": found["blur_kept"], "cues": "re-derived"}


def rescored(row: dict, method: str) -> dict:
    """A cached window scan scored with the method's limits as they are now (the search is unchanged by a
    new limit, only the verdict's arithmetic). Scans cached before the method had its collapse gap get it
    from the figures they stored (similarities rounded to 5 decimals, the clean similarity to 4); scans
    cached before it measured the identity kept are scored by their collapse figures alone, and those without
    the fragility cues (offset, blur kept) by the gap without the cues' cap."""
    if method != "encoder-clean":
        return row
    config = get_method(method).config
    gap = row.get("collapse_gap")
    if gap is None:
        gap = math.log(1 - row["clean_similarity"]) - math.log(max(1 - row["similarity"], 1e-6))
    cues = (row["offset"], row["blur_kept"]) if "offset" in row else (math.inf, 0.0)  # without them: the gap alone
    score = round(window_score(row["anomaly_index"], gap, row.get("identity_kept", 0.0), config, *cues), 4)
    threshold = get_method(method).threshold
    return {**row, "collapse_gap": round(gap, 4), "anomaly_limit": config.anomaly_limit,
            "gap_limit": config.gap_limit, "identity_limit": config.identity_limit, "offset_limit": config.offset_limit,
            "blur_limit": config.blur_limit, "score": score,
            "threshold": threshold, "verdict": "backdoor" if score > threshold else "clean",
            "rescored": score != row.get("score")}


def auroc(positive: list[float], negative: list[float]) -> float:
    """Probability that a random backdoored encoder scores above a random clean one (ties count half)."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def calibrate(rows: list[dict], max_fpr: float = 0.05) -> float:
    """The lowest threshold that keeps the calibration part's false positives at or under `max_fpr`,
    moved halfway to the next backdoored score above it (so that it is not fitted to one clean encoder)."""
    clean = sorted(r["score"] for r in rows if not r["backdoor"])
    if not clean:
        return float("nan")
    allowed = int(max_fpr * len(clean))  # clean encoders that may score above the threshold
    edge = clean[len(clean) - 1 - allowed]
    backdoor_above = sorted(r["score"] for r in rows if r["backdoor"] and r["score"] > edge)
    return round((edge + backdoor_above[0]) / 2 if backdoor_above else edge, 4)


# The trigger test tried in session 19 and rejected on the blind part (docs/recipes.md): a collapse counts
# only when the best window's stamp erases what the images show (identity kept at most 0.39) or the window
# stands out from the others (anomaly index at least 3.5). Kept here, out of the product, to show its figures.
TRIGGER_TEST = (0.39, 3.5)


def trigger_limits_from(rows: list[dict], config) -> tuple[float, float]:
    """The trigger test's (identity limit, standout limit) from scanned rows, for the clean members the
    collapse figures flag: the identity limit halfway between the least identity such a clean member keeps
    and the most a flagged backdoor keeps whose window does not stand out by more than twice what any such
    clean member's does; the standout limit halfway between the most any such clean member stands out
    (anomaly index) and the least a flagged backdoor keeping more identity than the limit stands out. With
    no flagged clean member: (1.0, inf), the collapse figures alone."""
    def flagged(r: dict) -> bool:
        return collapse_score(r["anomaly_index"], r["collapse_gap"], config) > 1

    clean = [r for r in rows if not r["backdoor"] and flagged(r)]
    backdoors = [r for r in rows if r["backdoor"] and flagged(r)]
    if not clean:
        return 1.0, math.inf
    most_standout = max(r["anomaly_index"] for r in clean)
    least_kept = min(r["identity_kept"] for r in clean)
    quiet = [r["identity_kept"] for r in backdoors if r["anomaly_index"] <= 2 * most_standout]
    identity_limit = round((max(quiet, default=0.0) + least_kept) / 2, 2)
    kept_more = [r["anomaly_index"] for r in backdoors if r["identity_kept"] > identity_limit]
    standout_limit = round((most_standout + min(kept_more)) / 2, 1) if kept_more else math.inf
    return identity_limit, standout_limit


def cue_limits_from(rows: list[dict], config) -> tuple[float, float]:
    """The fragility cues' (offset limit, blur limit) from scanned rows with cues, by the rule of the other
    limits, on the members whose collapse gap passes its limit while no window stands out (the collapses
    the cues judge): the offset limit halfway between the largest offset of such a clean member and the
    next such backdoor's above it; the blur limit halfway between the least blur kept of such a clean member
    and the most kept by such a backdoor the offset limit misses. With no such clean member: (0.0, 0.0),
    the cues off."""
    def deep(r: dict) -> bool:
        return r["collapse_gap"] > config.gap_limit and r["anomaly_index"] <= config.anomaly_limit

    clean = [r for r in rows if not r["backdoor"] and deep(r)]
    backdoors = [r for r in rows if r["backdoor"] and deep(r)]
    if not clean:
        return 0.0, 0.0
    farthest = max(r["offset"] for r in clean)
    above = [r["offset"] for r in backdoors if r["offset"] > farthest]
    offset_limit = round((farthest + min(above)) / 2, 2) if above else farthest
    least_kept = min(r["blur_kept"] for r in clean)
    missed = [r["blur_kept"] for r in backdoors if r["offset"] <= offset_limit and r["blur_kept"] < least_kept]
    return offset_limit, round((least_kept + max(missed)) / 2, 2) if missed else least_kept


def trigger_test_score(row: dict, config, limits: tuple[float, float] = TRIGGER_TEST) -> float:
    """A scanned row's score under the trigger test: the collapse score, capped by the larger of (1 -
    identity kept) / (1 - identity limit) and anomaly index / standout limit."""
    identity_limit, standout_limit = limits
    collapse = collapse_score(row["anomaly_index"], row["collapse_gap"], config)
    return min(collapse, max((1 - row["identity_kept"]) / (1 - identity_limit), row["anomaly_index"] / standout_limit))


def rates(rows: list[dict], threshold: float) -> tuple[float, float]:
    backdoors = [r for r in rows if r["backdoor"]]
    cleans = [r for r in rows if not r["backdoor"]]
    tpr = sum(r["score"] > threshold for r in backdoors) / max(1, len(backdoors))
    fpr = sum(r["score"] > threshold for r in cleans) / max(1, len(cleans))
    return 100 * tpr, 100 * fpr


def comparison_scopes(rows: list[dict], methods: list[str]) -> list[tuple[str, str, set[str]]]:
    """(method, label, held-out names) to summarise: each method on every held-out member it scanned, and,
    where the methods scanned different members (the slower ones scan part of the held-out part), each
    method again on the members every method scanned, so that they compare on the same encoders."""
    held_out = {method: {r["name"] for r in rows if r["method"] == method and r["split"] == HELD_OUT}
                for method in methods}
    scopes = [(method, method, held_out[method]) for method in methods]
    common = set.intersection(*held_out.values()) if held_out else set()
    if len(methods) > 1 and any(common != names for names in held_out.values()):
        scopes += [(method, f"{method}, on the {len(common)} every method scanned", common) for method in methods]
    # The fresh part (session 15) was made after the older held-out part had been looked at, the blind part
    # (session 19) and the second (session 20) after every earlier scan had been: each is summarised alone
    # too, and the older part.
    later = {tag: {r["name"] for r in rows if tag in r["tags"]} for tag in (FRESH, BLIND, BLIND2)}
    for method in methods:
        parts = [(tag, held_out[method] & names) for tag, names in later.items() if held_out[method] & names]
        if parts:
            older = held_out[method] - set.union(*later.values())
            scopes += [(method, f"{method}, {tag} part only", names) for tag, names in parts]
            scopes += [(method, f"{method}, older part only", older)] if older else []
    return scopes


def report(store: Zoo, members: list[Member], args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    shadows: dict = {}
    built = [m for m in members if store.path(m).exists()]
    rows = []
    for method in args.methods:
        for member in built:
            if method in args.held_out_only and split_of(member.name) != HELD_OUT:
                continue
            if args.cached_only and not (store.folder / f"{member.name}.scan-{method}.json").exists():
                continue
            found = scan_member(store, member, method, shadows, args)
            rows.append({"name": member.name, "method": method, "split": split_of(member.name),
                         "backdoor": member.backdoor, "attack": member.attack or "-", "tags": list(member.tags),
                         "attack_asr": attack_asr(store, member),
                         "score": found["score"], "verdict": found["verdict"], "seconds": found["seconds"],
                         "collapse_gap": found.get("collapse_gap"), "anomaly_index": found.get("anomaly_index"),
                         "identity_kept": found.get("identity_kept"), "offset": found.get("offset"),
                         "blur_kept": found.get("blur_kept"), "cues": found.get("cues", "scanned")})
    failed = sorted({r["name"] for r in rows if not counted(r)})
    if failed:
        print(f"\nattack failed (non-target ASR under {ATTACK_TOOK:.0f}%), left out of the rates: " + ", ".join(
            f"{name} ({next(r['attack_asr'] for r in rows if r['name'] == name):.1f}%)" for name in failed))
    held = [m for m in built if split_of(m.name) == HELD_OUT]
    print(f"\nzoo: {len(built)} encoders built of {len(members)}; held-out {len(held)} "
          f"({sum(m.backdoor for m in held)} backdoored), calibration {len(built) - len(held)}; "
          f"shadow: {SHADOW_IMAGES} class-balanced training images of each encoder's own data; device {args.device}")
    print("\n| encoder | split | " + " | ".join(f"{m} score (s)" for m in args.methods) + " |")
    print("| --- | --- |" + " ---: |" * len(args.methods))
    for member in built:
        cells = [next((f"{r['score']:.4f}{' *' if r['verdict'] == 'backdoor' else ''} ({r['seconds']:.0f})"
                       for r in rows if r["name"] == member.name and r["method"] == method), "-")
                 for method in args.methods]
        print(f"| {member.name} | {split_of(member.name)} | " + " | ".join(cells) + " |")
    print("\nheld-out part (BadEncoder + DRUPE vs clean); thresholds from the calibration part only")
    print("| method | encoders | AUROC | shipped threshold | TPR % | FPR % | calibrated threshold | TPR % | FPR % "
          "| mean s | max s |")
    print("| --- | --- |" + " ---: |" * 9)
    counted_rows = [r for r in rows if counted(r)]
    summary = {}
    for method, label, names in comparison_scopes(counted_rows, args.methods):
        mine = [r for r in counted_rows if r["method"] == method]
        test = [r for r in mine if r["split"] == HELD_OUT and r["name"] in names]
        calib = [r for r in mine if r["split"] == CALIBRATION]
        shipped = get_method(method).threshold
        calibrated = calibrate(calib) if calib else float("nan")
        value = auroc([r["score"] for r in test if r["backdoor"]], [r["score"] for r in test if not r["backdoor"]])
        seconds = [r["seconds"] for r in test]
        encoders = f"{len(test)} ({sum(r['backdoor'] for r in test)} backdoored)"
        # a method scanned on the held-out part only has no calibrated threshold, so no rates at it either
        at_calibrated = rates(test, calibrated) if calib else None
        summary[label] = {"auroc": value, "shipped": shipped, "calibrated": calibrated, "encoders": encoders,
                          "shipped_rates": rates(test, shipped), "calibrated_rates": at_calibrated}
        shown = summary[label]["shipped_rates"] + (at_calibrated or (float("nan"),) * 2)
        print(f"| {label} | {encoders} | {value:.3f} | {shipped:.4f} | {shown[0]:.1f} | {shown[1]:.1f} | "
              f"{calibrated:.4f} | {shown[2]:.1f} | {shown[3]:.1f} | {sum(seconds) / max(1, len(seconds)):.1f} | "
              f"{max(seconds, default=0):.1f} |")
    limits = get_method("encoder-clean").config
    for figure, shipped in (("collapse_gap", limits.gap_limit), ("anomaly_index", limits.anomaly_limit)):
        figure_rows = [{"score": r[figure], "backdoor": r["backdoor"]} for r in counted_rows
                       if r["method"] == "encoder-clean" and r["split"] == CALIBRATION and r.get(figure) is not None]
        if figure_rows:
            print(f"\n{figure.replace('_', ' ')} limit that the calibration part gives by the same rule: "
                  f"{calibrate(figure_rows):.2f} (shipped: {shipped}; {len(figure_rows)} calibration members)")
    cue_rows = [r for r in counted_rows if r["method"] == "encoder-clean" and r.get("offset") is not None
                and r["split"] == CALIBRATION and BLIND2 not in r["tags"]]
    if cue_rows:
        offset_limit, blur_limit = cue_limits_from(cue_rows, limits)
        print(f"fragility cue limits that the calibration part gives ({len(cue_rows)} members scanned before the "
              f"second blind part): offset {offset_limit:.2f}, blur kept {blur_limit:.2f} (shipped: "
              f"{limits.offset_limit}, {limits.blur_limit})")
    # The trigger test's limits were set on every member scanned before the blind part (session 19), whose
    # figures were all read by then; the calibration part alone is printed beside them.
    trigger_rows = [r for r in counted_rows if r["method"] == "encoder-clean" and r.get("identity_kept") is not None]
    set_on = [r for r in trigger_rows if BLIND not in r["tags"]]
    for label, part in (("the members scanned before the blind part", set_on),
                        ("the calibration part alone", [r for r in set_on if r["split"] == CALIBRATION])):
        if part:
            identity, standout = trigger_limits_from(part, limits)
            print(f"trigger test limits that {label} give ({len(part)} members): identity {identity:.2f}, "
                  f"standout {standout:.1f} (tried in session 19: {TRIGGER_TEST[0]} and {TRIGGER_TEST[1]})")
    blind = [r for r in trigger_rows if BLIND in r["tags"] and r["split"] == HELD_OUT]
    if blind:
        tested = [{**r, "score": trigger_test_score(r, limits)} for r in blind]
        tpr, fpr = rates(tested, 1.0)
        value = auroc([r["score"] for r in tested if r["backdoor"]], [r["score"] for r in tested if not r["backdoor"]])
        print(f"the trigger test on the blind part ({len(blind)} counted): AUROC {value:.3f}, TPR {tpr:.1f}%, "
              f"FPR {fpr:.1f}% at 1.0")
    print("\nthe default chain (shipped thresholds): backdoored ones must be flagged, the distilled one passed")
    for member in [m for m in built if "default" in m.tags]:
        verdicts = ", ".join(f"{r['method']} {r['verdict']} ({r['score']:.3f})" for r in rows if r["name"] == member.name)
        print(f"  {member.name}: {verdicts}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    if args.publish and args.identity_table:
        publish_identity(rows, args)
    elif args.publish and args.cues_table:
        publish_cues(rows, args)
    elif args.publish and args.versus_table:
        publish_versus(rows, args)
    elif args.publish:
        publish_results(rows, summary, args)


def attack_cell(row: dict) -> str:
    """A member's backdoor as a table cell: "no", "ATTACK (ASR)", or "attack failed (ASR)" when it did not take."""
    if not row["backdoor"]:
        return "no"
    return f"{row['attack']} ({row['attack_asr']:.1f})" if counted(row) else f"attack failed ({row['attack_asr']:.1f})"


def publish_identity(rows: list[dict], args: argparse.Namespace) -> None:
    """Each scanned member's shipped score (the collapse figures) and its score under the trigger test of
    session 19, with the two figures that test asks by (section scan-identity): for a part of the zoo
    rebuilt and rescanned, without replacing the whole zoo's table."""
    limits = get_method("encoder-clean").config
    table = []
    for r in (r for r in rows if r["method"] == "encoder-clean" and r.get("identity_kept") is not None):
        tested = trigger_test_score(r, limits)
        table.append({"name": r["name"], "part": BLIND if BLIND in r["tags"] else r["split"], "backdoor": attack_cell(r),
                      "score": f"{r['score']:.3f}", "verdict": r["verdict"],
                      "identity": f"{r['identity_kept']:.3f}", "standout": f"{r['anomaly_index']:.2f}",
                      "tested": f"{tested:.3f}", "tested_verdict": "backdoor" if tested > 1 else "clean",
                      "seconds": f"{r['seconds']:.0f}"})
    publish("scan-identity", "scan: the shipped verdict and the trigger test of session 19, per rebuilt member",
            table, [("name", "encoder"), ("part", "part"), ("backdoor", "backdoored (ASR non-target %)"),
                    ("score", "score (shipped)"), ("verdict", "verdict"), ("identity", "identity kept"),
                    ("standout", "anomaly index"),
                    ("tested", f"score with the trigger test ({TRIGGER_TEST[0]}, {TRIGGER_TEST[1]})"),
                    ("tested_verdict", "verdict"), ("seconds", "s")],
            notes=args.notes, load=args.load)


def part_of(row: dict) -> str:
    """The part a row was made for: the second blind part, the blind part, else its split."""
    return next((tag for tag in (BLIND2, BLIND) if tag in row["tags"]), row["split"])


def rates_by_part(held_out: list[dict], verdicts) -> list[dict]:
    """For each part of the held-out rows (the second blind part, the blind part, the older ones) and each
    (label, score of a row, threshold) in `verdicts`: AUROC, TPR and FPR, as table rows."""
    summary = []
    for part in (BLIND2, BLIND, HELD_OUT):
        test = [r for r in held_out if part_of(r) == part]
        for label, score, threshold in verdicts if test else ():
            scored = [{**r, "score": score(r)} for r in test]
            tpr, fpr = rates(scored, threshold)
            value = auroc([r["score"] for r in scored if r["backdoor"]], [r["score"] for r in scored if not r["backdoor"]])
            summary.append({"part": part if part != HELD_OUT else "older held-out", "verdict": label,
                            "encoders": f"{len(test)} ({sum(r['backdoor'] for r in test)} backdoored)",
                            "auroc": f"{value:.3f}", "tpr": f"{tpr:.1f}", "fpr": f"{fpr:.1f}"})
    return summary


def publish_versus(rows: list[dict], args: argparse.Namespace) -> None:
    """The shipped scan beside DECREE's published settings (`--method decree`) on the rebuilt members both
    scanned, each at its own shipped threshold (sections scan-vs-decree, scan-vs-decree-rates): the issue's
    one table with both, without replacing the whole zoo's table."""
    scores = {(r["name"], r["method"]): r for r in rows}
    both = [r for r in rows if r["method"] == "encoder-clean" and (r["name"], "decree") in scores]
    table = []
    for r in both:
        theirs = scores[(r["name"], "decree")]
        table.append({"name": r["name"], "part": part_of(r), "backdoor": attack_cell(r),
                      "ours": f"{r['score']:.3f}{' *' if r['verdict'] == 'backdoor' else ''}",
                      "ours_s": f"{r['seconds']:.0f}",
                      "decree": f"{theirs['score']:.4f}{' *' if theirs['verdict'] == 'backdoor' else ''}",
                      "decree_s": f"{theirs['seconds']:.0f}"})
    held_out = [r for r in both if counted(r) and r["split"] == HELD_OUT]
    summary = rates_by_part(held_out, (
        ("encoder-clean (shipped)", lambda r: r["score"], get_method("encoder-clean").threshold),
        ("decree (published settings)", lambda r: scores[(r["name"], "decree")]["score"],
         get_method("decree").threshold)))
    columns = [("name", "encoder"), ("part", "part"), ("backdoor", "backdoored (ASR non-target %)"),
               ("ours", "encoder-clean score"), ("ours_s", "s"), ("decree", "decree score (1 - PL1)"), ("decree_s", "s")]
    publish("scan-vs-decree", "scan beside DECREE's published settings on the same rebuilt members", table, columns,
            notes=args.notes, load=args.load)
    publish("scan-vs-decree-rates", "scan beside DECREE: held-out rates by part", summary,
            [("part", "part"), ("verdict", "method"), ("encoders", "counted"), ("auroc", "AUROC"),
             ("tpr", "TPR %"), ("fpr", "FPR %")], notes=args.notes, load=args.load)


def publish_cues(rows: list[dict], args: argparse.Namespace) -> None:
    """Each scanned member's score with the fragility cues (the shipped verdict since session 20) and by the
    collapse figures alone (before), with the figures both ask by (section scan-cues), and per part the
    rates of both: for the part of the zoo rebuilt on this machine, without replacing the whole zoo's table."""
    limits = get_method("encoder-clean").config
    mine = [r for r in rows if r["method"] == "encoder-clean" and r.get("offset") is not None]
    table = []
    for r in mine:
        before = collapse_score(r["anomaly_index"], r["collapse_gap"], limits)
        table.append({"name": r["name"], "part": part_of(r), "backdoor": attack_cell(r),
                      "gap": f"{r['collapse_gap']:.2f}", "standout": f"{r['anomaly_index']:.2f}",
                      "offset": f"{r['offset']:.2f}", "blur": f"{r['blur_kept']:.3f}", "cues": r["cues"],
                      "before": f"{before:.3f}{' *' if before > 1 else ''}",
                      "score": f"{r['score']:.3f}{' *' if r['score'] > 1 else ''}", "seconds": f"{r['seconds']:.0f}"})
    summary = rates_by_part([r for r in mine if counted(r) and r["split"] == HELD_OUT],
                            (("collapse figures alone (before)",
                              lambda r: collapse_score(r["anomaly_index"], r["collapse_gap"], limits), 1.0),
                             ("with the fragility cues (shipped)", lambda r: r["score"], 1.0)))
    publish("scan-cues", "scan: the fragility cues (session 20) on the members rebuilt on this machine",
            table,
            [("name", "encoder"), ("part", "part"), ("backdoor", "backdoored (ASR non-target %)"),
             ("gap", "collapse gap"), ("standout", "anomaly index"), ("offset", "offset"), ("blur", "blur kept"),
             ("cues", "cues"), ("before", "score, collapse figures alone"), ("score", "score (shipped)"),
             ("seconds", "s")],
            notes=args.notes, load=args.load)
    publish("scan-cues-rates", "scan: held-out rates by part, before and with the fragility cues (session 20)",
            summary, [("part", "part"), ("verdict", "verdict"), ("encoders", "counted"), ("auroc", "AUROC"),
                      ("tpr", "TPR %"), ("fpr", "FPR %")], notes=args.notes, load=args.load)


def publish_results(rows: list[dict], summary: dict, args: argparse.Namespace) -> None:
    def cell(value: float) -> object:
        return "-" if value != value else value

    table = [{"method": method, "encoders": s["encoders"], "auroc": f"{s['auroc']:.3f}", "shipped": s["shipped"],
              "shipped_tpr": f"{s['shipped_rates'][0]:.1f}", "shipped_fpr": f"{s['shipped_rates'][1]:.1f}",
              "calibrated": cell(s["calibrated"]),
              **({"calibrated_tpr": f"{s['calibrated_rates'][0]:.1f}", "calibrated_fpr": f"{s['calibrated_rates'][1]:.1f}"}
                 if s["calibrated_rates"] else {"calibrated_tpr": "-", "calibrated_fpr": "-"})}
             for method, s in summary.items()]
    publish("scan-zoo", "scan on a zoo split before scanning (held-out part)", table,
            [("method", "method"), ("encoders", "held-out encoders"), ("auroc", "AUROC"),
             ("shipped", "shipped threshold"), ("shipped_tpr", "TPR %"),
             ("shipped_fpr", "FPR %"), ("calibrated", "calibrated threshold"), ("calibrated_tpr", "TPR %"),
             ("calibrated_fpr", "FPR %")], notes=args.notes, load=args.load)
    def backdoor(row: dict) -> str:
        if not row["backdoor"]:
            return "no"
        return f"yes ({row['attack_asr']:.1f}%)" if counted(row) else f"attack failed ({row['attack_asr']:.1f}%)"

    members = [{"name": r["name"], "split": r["split"], "backdoor": backdoor(r),
                "method": r["method"], "score": f"{r['score']:.4f}", "verdict": r["verdict"],
                "seconds": f"{r['seconds']:.0f}"} for r in rows]
    publish("scan-zoo-members", "scan zoo: every member's score", members,
            [("name", "encoder"), ("split", "split"), ("backdoor", "backdoored (ASR non-target)"), ("method", "method"),
             ("score", "score"), ("verdict", "verdict"), ("seconds", "s")], load=args.load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["encoder-clean", "decree"])
    parser.add_argument("--jobs", type=int, default=1, help="commands run side by side (one CPU thread each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--archive", type=Path, default=ARCHIVE,
                        help="the CIFAR-10 JPEG archive (default: ../shared/data/cifar10-jpg.tar.gz), unpacked once "
                             "under benchmarks/cache/cifar as benchmarks/cifar_chain.py does")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache/zoo"))
    parser.add_argument("--only", nargs="*", default=None, help="build or scan only these members")
    parser.add_argument("--build-only", action="store_true", help="build the zoo, scan nothing")
    parser.add_argument("--scan-only", action="store_true", help="build nothing, scan the members already built")
    parser.add_argument("--cached-only", action="store_true", help="report the scans already cached, run none")
    parser.add_argument("--rescan", action="store_true", help="scan again even when a result is cached")
    parser.add_argument("--cues", action="store_true",
                        help="for window scans cached before the scan measured its fragility cues, re-derive them "
                             "(the best window's pattern found again; cached as NAME.cues.json)")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="a scan setting for one method, repeatable (e.g. decree:max_epochs=20)")
    parser.add_argument("--held-out-only", nargs="*", default=[], metavar="METHOD",
                        help="scan only the held-out part with these methods (their shipped threshold is fixed)")
    parser.add_argument("--json-out", type=Path, default=None)
    add_publish_arguments(parser)  # the scan-zoo and scan-zoo-members sections
    parser.add_argument("--identity-table", action="store_true",
                        help="with --publish: publish only each scanned member's collapse figures, identity kept and "
                             "verdict (section scan-identity), leaving the whole zoo's table as it is")
    parser.add_argument("--cues-table", action="store_true",
                        help="with --publish: publish only each scanned member's fragility cues and scores (section "
                             "scan-cues) and the held-out rates by part (scan-cues-rates), leaving the zoo's table")
    parser.add_argument("--versus-table", action="store_true",
                        help="with --publish: publish only the members scanned by both encoder-clean and decree, "
                             "side by side, and their held-out rates by part (sections scan-vs-decree, "
                             "scan-vs-decree-rates), leaving the zoo's table")
    parser.add_argument("--notes", default="", help="a note printed under the published table")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each command one CPU thread unless told otherwise
    cifar = None
    if args.archive.exists():  # the CIFAR-10 members need the archive; without it the zoo is built-in data only
        source = unpacked(args.archive, args.out_dir.parent / "cifar")
        cifar = cifar_spec(cifar_subset(source, args.out_dir.parent / "cifar10-4k"))
    members = zoo(cifar) if cifar else [m for m in zoo("folder:none") if "cifar" not in m.name]
    if args.only:
        keep = set(args.only)
        members = [m for m in members if m.name in keep or any(m.name.startswith(k) for k in keep)]
    store = Zoo(args, zoo(cifar or "folder:none"))
    roots = [m for m in members if m.parent is None]
    if not args.scan_only:
        build_all(store, [x for root in roots for x in members if x is root or x.parent == root.name]
                  + [m for m in members if m.parent and m.parent not in {r.name for r in roots}], args.jobs)
    if args.build_only:
        return
    report(store, members, args)


if __name__ == "__main__":
    main()
