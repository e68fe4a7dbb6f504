"""`scan` on large inputs: how long a torchvision ResNet-50 at 224 px takes on the CPU, and does the
large-input schedule (from 128 px: three quarters of the steps, start images and evaluation images, bf16
where the CPU has it; `WindowConfig.effective`) still find real backdoors at 224 px?

    python benchmarks/scan_large.py [--timing large full] [--threads 2] [--members NAME ...]
        [--zoo benchmarks/cache/zoo] [--option KEY=VALUE] [--json-out rows.json] [--from-json rows.json] [--publish [--load TEXT]]

1. Timing: `ec.scan` of `resnet50` (random init: the time does not depend on the weights) with built-in
   shadow images, under each schedule asked for: `large` (the default) and `full` (`-o large_from=100000`,
   the 32 px settings at 224 px).
2. Detection at 224 px: zoo encoders (benchmarks/scan_zoo.py's cache; 32 px, real BadEncoder and DRUPE
   backdoors) behind a 224 px front that resizes the input to 32 px inside the forward (antialiased
   bilinear, differentiable), so a trigger at 224 px reaches the backdoor as the attack planted it. Each is
   scanned with the default settings, which take the large-input schedule at 224 px; the member's own
   32 px scan (from the zoo's cache) stands beside it. `large_effort` was chosen on the zoo's calibration
   members only: 0.5 missed one of their two backdoors at 224 px (DRUPE, white square: 0.921), 0.75
   flagged both and passed the three clean ones, and still scans ResNet-50 in under 5 minutes.

With --publish the tables go to benchmarks/RESULTS.md (sections `scan-large-timing`, `scan-large-detection`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import encoder_clean as ec
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.base import Encoder
from results import add_publish_arguments, publish

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SCHEDULES = {"large": (), "full": ("large_from=100000",)}
LARGE_SIZE = 224
# The zoo's calibration members and the default chain (the default poisons and the default distill).
MEMBERS = ("clean-glyphs-w16-s0", "clean-shapes-w16-s2", "badencoder-white-square-t0-e8-clean-shapes-w16-s0",
           "drupe-white-square-t7-e8-clean-shapes-w16-s2", "default-clean", "default-distill",
           "default-badencoder-white-square", "default-badencoder-checkerboard", "default-badencoder-noise-patch",
           "default-drupe-white-square", "default-drupe-checkerboard", "default-drupe-noise-patch")


class Enlarged(Encoder):
    """A small encoder behind a large input: images of `size` px are resized to its own size first."""

    def __init__(self, inner: Encoder, size: int):
        super().__init__(inner.arch, inner.feature_dim, size, inner.mean.flatten().tolist(),
                         inner.std.flatten().tolist())
        self.inner = inner
        self.tap_names = inner.tap_names

    def features_with_taps(self, images, taps=()):
        small = F.interpolate(images, size=self.inner.image_size, mode="bilinear", antialias=True,
                              align_corners=False)
        return self.inner.features_with_taps(small, taps)


def timing(schedules: list[str]) -> list[dict]:
    rows = []
    encoder = create_encoder("resnet50").eval()
    for name in schedules:
        started = time.perf_counter()
        result = ec.scan(encoder, "builtin", ec.ScanConfig(options=SCHEDULES[name]), device="cpu")
        seconds = time.perf_counter() - started
        rows.append({"schedule": name, "arch": "resnet50", "image_size": encoder.image_size,
                     "threads": torch.get_num_threads(), "seconds": round(seconds, 1), "verdict": result.verdict,
                     "score": round(result.score, 3)})
        print(f"resnet50 at {encoder.image_size} px, schedule {name}: {seconds:.1f} s "
              f"({torch.get_num_threads()} threads), {result.verdict} ({result.score:.3f})", flush=True)
    return rows


def detection(members: list[str], zoo_dir: Path, options: tuple[str, ...] = ()) -> list[dict]:
    import scan_zoo

    by_name = {m.name: m for m in scan_zoo.zoo(scan_zoo.cifar_spec(HERE / "cache" / "cifar" / "cifar10"))}
    rows = []
    for name in members:
        member, path = by_name[name], zoo_dir / f"{name}.safetensors"
        if not path.exists():
            print(f"{name}: not built, skipped")
            continue
        cached = zoo_dir / f"{name}.scan-encoder-clean.json"
        # the zoo's 32 px scan, scored with the limits as they are now (as scan_zoo.py reports it)
        small = scan_zoo.rescored(json.loads(cached.read_text()), "encoder-clean") if cached.exists() else {}
        inner = ec.load_encoder(path).encoder
        started = time.perf_counter()
        result = ec.scan(Enlarged(inner, LARGE_SIZE), member.data, ec.ScanConfig(options=options), device="cpu")
        rows.append({"member": name, "split": scan_zoo.split_of(name), "backdoor": member.backdoor,
                     "score_32px": small.get("score"), "verdict_32px": small.get("verdict"),
                     "score_224px": round(result.score, 3), "verdict_224px": result.verdict,
                     "right": result.verdict == ("backdoor" if member.backdoor else "clean"),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", nargs="*", choices=list(SCHEDULES), default=["large"])
    parser.add_argument("--members", nargs="*", default=list(MEMBERS))
    parser.add_argument("--zoo", type=Path, default=HERE / "cache" / "zoo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a scan setting for the detection part (e.g. large_from=100000: the full schedule)")
    parser.add_argument("--json-out", type=Path, default=None)
    add_publish_arguments(parser)
    parser.add_argument("--from-json", type=Path, default=None,
                        help="publish the rows of an earlier run's --json-out instead of measuring")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        timed, found = saved["timing"], saved["detection"]
    else:
        timed = timing(args.timing)
        found = detection(args.members, args.zoo, tuple(args.option))
    if args.json_out:
        args.json_out.write_text(json.dumps({"timing": timed, "detection": found}, indent=2))
    if args.publish:
        if timed:
            publish("scan-large-timing", "scan on a torchvision ResNet-50 at 224 px, CPU", timed,
                    [("schedule", "schedule"), ("arch", "arch"), ("image_size", "px"), ("threads", "threads"),
                     ("seconds", "seconds"), ("verdict", "verdict"), ("score", "score")], load=args.load)
        if found:
            right = sum(row["right"] for row in found)
            publish("scan-large-detection", "scan at 224 px (the large-input schedule) on zoo encoders behind a "
                    "224 px front", found,
                    [("member", "member"), ("split", "zoo part"), ("backdoor", "backdoored"),
                     ("score_32px", "score at 32 px"), ("score_224px", "score at 224 px"),
                     ("verdict_224px", "verdict at 224 px"), ("right", "right"), ("seconds", "seconds")],
                    load=args.load, notes=f"{right}/{len(found)} verdicts right at 224 px.")


if __name__ == "__main__":
    main()
