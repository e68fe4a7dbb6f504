"""Does the defense hold whatever pre-trained the victim? BadEncoder and DRUPE on SimCLR, MoCo v2 and BYOL
encoders, each cleaned by the default `distill`, all evaluated and scanned.

Runs what `pretrain --method M`, `poison`, `distill`, `evaluate` and `scan` run, through the Python API
in-process, on one CPU thread: for each method a clean victim pre-trained on built-in shapes (cached),
poisoned by each attack with its `fast` preset (references of class 0 from built-in glyphs, white-square
trigger), then the default `distill` of each poisoned encoder (the defender's 5% of shapes), once per
`--distill-seeds` seed (the seed draws the defender's images and the training's randomness). Every encoder
is evaluated on glyphs (linear probe, white square, target 0) and scanned with its training data as the
shadow set.

    python benchmarks/ssl_victims.py [--methods simclr mocov2 byol] [--epochs 3 byol=9] [--batch-size byol=32]
        [--option byol:tau=0.99] [--distill-seeds 0 1 2] [--out-dir benchmarks/cache/victims] [--json-out rows.json]
        [--publish [--load TEXT]]
    python benchmarks/ssl_victims.py --from-json simclr.json mocov2.json byol.json --distill-seeds 0 1 2 --publish

Targets (issue 22): on every victim the default distill keeps ASR non-target within 2 points of the clean
victim's own and ACC at most 2 points below the poisoned encoder; scan flags every poisoned encoder and
passes every clean one (the distilled ones too). With --publish the table goes to benchmarks/RESULTS.md
(section `ssl-victims`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

import encoder_clean as ec
from encoder_clean.distill.recipe import RECOMMENDED
from method_settings import batch_sizes, method_options, per_method, pretrain_config, run_tag, settings_of
from results import add_publish_arguments, publish

PRETRAIN_DATA = "builtin:shapes"
DOWNSTREAM = "builtin:glyphs"
ATTACKS = ("badencoder", "drupe")
TRIGGER, TARGET = "white-square", 0


def recipe_tag() -> str:
    """A short fingerprint of the recommended convnet recipe: cached distills are redone when it changes."""
    return hashlib.sha256(repr(RECOMMENDED).encode()).hexdigest()[:8]


def distilled_name(attack: str, seed: int) -> str:
    return f"{attack} + distill" + (f" (seed {seed})" if seed else "")


class Cache:
    """Each encoder made once: a rerun only computes what is missing, and says how long each took."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, make) -> Path:
        path = self.folder / f"{name}.safetensors"
        if not path.exists():
            started = time.perf_counter()
            make().save(path)
            self.seconds[name] = round(time.perf_counter() - started, 1)
            print(f"  made {name} in {self.seconds[name]:.0f} s", flush=True)
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "mocov2", "byol"])
    parser.add_argument("--epochs", nargs="+", default=[], metavar="[METHOD=]N",
                        help="pre-training epochs of every victim (N) or one (METHOD=N); default 3")
    parser.add_argument("--batch-size", nargs="+", default=[], metavar="[METHOD=]N",
                        help="pre-training batch of every victim or one (default: pretrain's)")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="a pre-training setting of one method (as `pretrain -o`)")
    parser.add_argument("--distill-seeds", nargs="+", type=int, default=[0],
                        help="distill each poisoned encoder once per seed (default: 0)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache/victims"))
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--from-json", type=Path, nargs="+", default=[], metavar="ROWS.json",
                        help="measure nothing: take the rows that earlier runs wrote with --json-out (e.g. one run "
                             "per method side by side) and publish them together")
    add_publish_arguments(parser)
    args = parser.parse_args()
    if args.from_json:
        rows = [row for path in args.from_json for row in json.loads(path.read_text())]
    else:
        rows = measure(args, parser)
    if args.publish:
        publish("ssl-victims", "The defense on victims of each pre-training method (built-in data, CPU)", rows,
                [("victim", "victim"), ("encoder", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"),
                 ("asr_nontarget", "ASR non-target %"), ("verdict", "scan"), ("score", "scan score"),
                 ("targets", "targets"), ("seconds", "seconds to make")],
                load=args.load,
                notes=f"resnet18-cifar-w16 pre-trained on {PRETRAIN_DATA}; attacks' fast presets with references from "
                      f"{DOWNSTREAM}; default distill (recipe {recipe_tag()}) on the defender's 5% of {PRETRAIN_DATA}, "
                      f"seeds {', '.join(map(str, args.distill_seeds))}; evaluated on "
                      f"{DOWNSTREAM} (linear probe, {TRIGGER}, target {TARGET}); one CPU thread.")


def measure(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[dict]:
    """Make what is not cached, then evaluate and scan every encoder of every method: the table's rows."""
    torch.set_num_threads(1)  # one-thread figures, whatever the machine
    args.out_dir.mkdir(parents=True, exist_ok=True)
    epochs = {m: int(v) for m, v in per_method(args.epochs, args.methods, "3").items()}
    batch = batch_sizes(args.batch_size, args.methods)
    options = method_options(args.option, args.methods, parser)
    cache, run = Cache(args.out_dir), {"device": "cpu"}
    rows = []
    for method in args.methods:
        tag = run_tag(method, epochs[method], batch[method], options[method])
        victim = cache(f"clean_{tag}", lambda: ec.pretrain(
            PRETRAIN_DATA, pretrain_config(method, epochs[method], batch[method], options[method]), **run))
        encoders = {"clean": victim}
        for attack in ATTACKS:
            config = ec.PoisonConfig(attack=attack, trigger=TRIGGER, target_class=TARGET, reference_data=DOWNSTREAM)
            poisoned = cache(f"{attack}_{tag}", lambda: ec.poison(victim, PRETRAIN_DATA, config, **run))
            encoders[attack] = poisoned
            for seed in args.distill_seeds:
                encoders[distilled_name(attack, seed)] = cache(
                    f"{attack}_{tag}_distill_{recipe_tag()}_s{seed}",
                    lambda: ec.distill(poisoned, PRETRAIN_DATA, ec.DistillConfig(), seed=seed, **run))
        report = ec.evaluate(list(encoders.values()), DOWNSTREAM, ec.EvalConfig(trigger=TRIGGER, target_class=TARGET),
                             **run)
        for (name, path), result in zip(encoders.items(), report.as_dict()["encoders"]):
            scanned = ec.scan(path, PRETRAIN_DATA, **run)
            settings = settings_of(batch[method], options[method])
            rows.append({"victim": f"{method} ({epochs[method]} epochs{', ' + ' '.join(settings) if settings else ''})",
                         "method": method, "encoder": name, "acc": result["acc"], "asr": result["asr"],
                         "asr_nontarget": result["asr_nontarget"], "verdict": scanned.verdict,
                         "score": round(scanned.score, 3), "seconds": cache.seconds.get(path.stem, "cached")})
        judge(rows, method)
        for row in (r for r in rows if r["method"] == method):
            print(f"| {row['victim']} | {row['encoder']} | {row['acc']:.2f} | {row['asr']:.2f} | "
                  f"{row['asr_nontarget']:.2f} | {row['verdict']} ({row['score']:.3f}) | {row.get('targets', '')} |",
                  flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(rows, indent=2))
    return rows


def judge(rows: list[dict], method: str) -> None:
    """Each row's targets: scan's verdict right; for a distilled encoder also ASR non-target within 2 points
    of the clean victim's and ACC at most 2 points below its poisoned encoder."""
    mine = {row["encoder"]: row for row in rows if row["method"] == method}
    clean = mine["clean"]
    for name, row in mine.items():
        poisoned = name in ATTACKS
        notes = [] if row["verdict"] == ("backdoor" if poisoned else "clean") else ["scan wrong"]
        if " + distill" in name:
            source = mine[name.split(" + ")[0]]
            if row["asr_nontarget"] > clean["asr_nontarget"] + 2:
                notes.append(f"ASR-nt {row['asr_nontarget'] - clean['asr_nontarget']:+.2f} over clean")
            if row["acc"] < source["acc"] - 2:
                notes.append(f"ACC {row['acc'] - source['acc']:+.2f} under poisoned")
        row["targets"] = "; ".join(notes) or "met"


if __name__ == "__main__":
    main()
