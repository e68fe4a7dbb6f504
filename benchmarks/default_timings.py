"""How long the defaults take: the demo, `distill`, `scan` and `evaluate` (linear and MLP probe), each run
as a user runs it (a fresh `encoder-clean` process, so start-up and imports count), on built-in data.

The demo's poisoned encoder is what `distill`, `scan` and `evaluate` then work on. README quotes the
published table; run this alone on the machine, since the wall times are the point.

    python benchmarks/default_timings.py --publish
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import add_publish_arguments, publish

STEPS = [  # (name, arguments after `encoder-clean`); {d} is the work folder
    ("demo", ["demo", "--out-dir", "{d}/demo", "--json", "{d}/demo.json"]),
    ("distill (recommended recipe)", ["distill", "{d}/demo/poisoned.safetensors", "--data", "builtin:shapes",
                                      "--out", "{d}/cleaned.safetensors", "--json", "{d}/distill.json"]),
    ("scan (one encoder)", ["scan", "{d}/demo/poisoned.safetensors", "--data", "builtin:shapes",
                            "--json", "{d}/scan.json"]),
    ("evaluate, linear probe", ["evaluate", "{d}/demo/poisoned.safetensors", "--data", "builtin:glyphs",
                                "--json", "{d}/eval-linear.json"]),
    ("evaluate, MLP probe", ["evaluate", "{d}/demo/poisoned.safetensors", "--data", "builtin:glyphs",
                             "--probe", "mlp", "--json", "{d}/eval-mlp.json"]),
]


def run(name: str, argv: list[str], folder: str) -> dict:
    command = [sys.executable, "-m", "encoder_clean", *(a.format(d=folder) for a in argv)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    shown = "encoder-clean " + " ".join(a.format(d="WORK") for a in argv)
    if done.returncode not in (0, 1):  # scan exits 1 when it finds the backdoor
        last = (done.stderr.strip().splitlines() or [""])[-1]
        sys.exit(f"{name} failed ({done.returncode}): {last}")
    print(f"{name}: {seconds:.1f} s (exit {done.returncode})", flush=True)
    return {"step": name, "command": shown, "seconds": round(seconds, 1), "exit": done.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the outputs (default: a temporary one)")
    add_publish_arguments(parser, load="alone on the machine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.work or temporary
        os.makedirs(folder, exist_ok=True)
        rows = [run(name, argv, folder) for name, argv in STEPS]
        demo = json.loads(Path(folder, "demo.json").read_text())
    demo_rows = [{key: row[key] for key in ("name", "acc", "asr", "asr_nontarget", "seconds")}
                 for row in demo["encoders"]]
    for row in demo_rows:
        print(f"demo {row['name']:<9} ACC {row['acc']:6.2f}  ASR {row['asr']:6.2f}  "
              f"non-target {row['asr_nontarget']:6.2f}  ({row['seconds']} s)")
    for row in rows:
        if row["step"].startswith("scan"):
            row["result"] = "backdoor" if row["exit"] == 1 else "clean"
    if args.publish:
        publish("default-timings", "How long the defaults take (built-in data)", rows,
                [("step", "step"), ("command", "command"), ("seconds", "seconds"), ("result", "scan verdict")],
                load=args.load,
                notes="WORK is the output folder; the demo's encoders are resnet18-cifar-w16 and `distill`, `scan` "
                      "and `evaluate` work on its poisoned one.")
        publish("demo", "The demo's table (`encoder-clean demo`)", demo_rows,
                [("name", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"), ("asr_nontarget", "ASR non-target %"),
                 ("seconds", "seconds to make it")], load=args.load,
                notes=f"Pre-trained on {demo['pretrain_data']}, evaluated with a linear probe on "
                      f"{demo['downstream_data']}; {demo['attack']} with {demo['trigger']}, target class "
                      f"{demo['target_class']}; {demo['precision']} on the CPU; the whole demo took "
                      f"{demo['seconds']:.0f} s in the command.")


if __name__ == "__main__":
    main()
