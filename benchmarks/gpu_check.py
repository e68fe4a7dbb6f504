"""The GPU check (issue 23): every GPU figure of the project from one run of at most 8 minutes.

    python benchmarks/gpu_check.py --out DIR [--archive CIFAR10_JPEG.tar.gz] [--device cuda] [--budget-s 470]
        [--parts throughput chain poisoning] [--chain-epochs N] [--naive-workers N] [--no-compiled]
        [--throughput-workloads COMMAND ...] [--throughput-steps N] [--smoke]
    python benchmarks/gpu_check.py --from-json gpu_check.json [--publish]

Writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the same as Markdown tables), each part's
own JSON, and DIR/logs.tar.gz (every step's progress). `--from-json` reads a returned gpu_check.json back
here: it prints its tables, or with --publish writes them into RESULTS.md (sections gpu-throughput,
gpu-chain, gpu-poisoning) with the device run's own command, commit and machine. Parts, in this order:

1. `throughput`: `benchmarks/throughput.py` at `resnet18-cifar` (full width), batch 512: ours against the
   naive DataLoader + PIL fp32 loop for pretrain, poison, distill and evaluate's feature pass, then ours
   again with `--compile` for distill and pretrain, and MFU against a bf16 matmul timed in the same run.
   It runs alone on the machine, so its figures are clean.
2. `chain`: `benchmarks/cifar_chain.py` on real CIFAR-10 at `resnet18-cifar`: pretrain (as many epochs
   as fit the budget, from the throughput just measured, or `--chain-epochs`), BadEncoder and DRUPE
   (2 epochs, 50 references, as on the CPU), the fine-tune-only baseline, the default distill and the
   same with a 150-epoch teacher fine-tune, each step timed; then evaluate and scan of every encoder
   made. The encoders are made in stages of processes side by side on the GPU (the attacks together,
   then every defense of every attack together), which stop `chain_reserve_s` before the deadline so
   that what was made still gets evaluated.
3. `poisoning`: BASSL (MoCo v2 victim, 200 epochs) and CTRL (SimCLR victim, 800 epochs), the published
   pre-training lengths, on a class-balanced 5,000-image subset of CIFAR-10 at `resnet18-cifar-w16`, target
   classes 0 and 3 (one process per class): does the data-poisoning backdoor appear when the victim
   trains as long as in the papers? Each poisoned encoder is evaluated (linear probe on the subset, the
   CIFAR-10 test split) and scanned.

Parts 2 and 3 share the GPU (separate processes, run side by side), so their step times are under load;
the throughput part ran alone. Each part writes what it has as it goes and the whole run stops at
--budget-s: whatever did not finish is reported as missing, not waited for.

`--smoke` runs every part at toy sizes (a tiny architecture, a few steps, a 200-image subset) so that the
whole script can be checked end to end on the CPU before any device time is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from results import add_publish_arguments  # noqa: E402

PARTS = ("throughput", "chain", "poisoning")
POISONING_TARGETS = (0, 3)


@dataclass(frozen=True)
class Sizes:
    """Everything the run's length depends on."""

    arch: str = "resnet18-cifar"
    batch: int = 512
    steps: int = 30
    workers: int = 8
    compile_workloads: tuple[str, ...] = ("distill", "pretrain")
    pretrain_seconds: float = 70.0  # the chain's pre-training budget, under the load of the poisoning part
    pretrain_epochs: tuple[int, int] = (3, 40)  # the fewest and most epochs the budget may give
    poison_epochs: int = 2
    references: int = 50
    chain_attacks: tuple[str, ...] = ("badencoder", "drupe")
    chain_defenses: tuple[str, ...] = ("ft", "distill", "distill-long-ft")  # cifar_chain.DEFENSES
    chain_reserve_s: float = 120.0  # kept for the last step: evaluate and scan every encoder made
    poisoning_arch: str = "resnet18-cifar-w16"
    poisoning_per_class: int = 500
    # the published pre-training of each data-poisoning paper's victim: (method, epochs)
    victims: tuple[tuple[str, str, int], ...] = (("bassl", "mocov2", 200), ("ctrl", "simclr", 800))


FULL = Sizes()
SMOKE = Sizes(arch="resnet10-cifar-w8", batch=32, steps=12, workers=1, compile_workloads=(),
              pretrain_seconds=1.0, pretrain_epochs=(1, 1), poison_epochs=1, references=10,
              chain_defenses=("ft", "distill"), chain_reserve_s=60.0,
              poisoning_arch="resnet10-cifar-w8", poisoning_per_class=20,
              victims=(("bassl", "mocov2", 1), ("ctrl", "simclr", 1)))


class Clock:
    def __init__(self, budget: float):
        self.start = time.perf_counter()
        self.deadline = self.start + budget

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def launch(command: list[str], log: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    print(f"[gpu_check] {' '.join(command)}  (log: {log.name})", flush=True)
    # a session of its own, so that a stop at the deadline takes the process's workers with it
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_all(processes: dict[str, subprocess.Popen], clock: Clock) -> dict[str, object]:
    """Wait for every process until the deadline; the exit status of each, or 'stopped at the deadline'."""
    while any(p.poll() is None for p in processes.values()) and clock.left() > 0:
        time.sleep(1)
    status = {}
    for name, process in processes.items():
        finished = process.poll() is not None
        stop(process)
        status[name] = process.returncode if finished else "stopped at the deadline"
    return status


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ parts
def throughput(args: argparse.Namespace, sizes: Sizes, clock: Clock) -> dict:
    """Both throughput runs, one after the other, alone on the machine."""
    common = [sys.executable, str(HERE / "throughput.py"), "--device", args.device, "--arch", sizes.arch,
              "--batch-size", str(sizes.batch), "--steps", str(sizes.steps), "--workers", str(sizes.workers)]
    plain = common + (["--workloads", *args.throughput_workloads] if args.throughput_workloads else [])
    runs = {"plain": (plain + ["--json-out", str(args.out / "throughput.json")], args.out / "throughput.json")}
    if sizes.compile_workloads:
        runs["compiled"] = (common + ["--compile", "--no-naive", "--workloads", *sizes.compile_workloads,
                                      "--json-out", str(args.out / "throughput-compiled.json")],
                            args.out / "throughput-compiled.json")
    result: dict[str, object] = {}
    for name, (command, out) in runs.items():
        started = time.perf_counter()
        process = launch(command, args.logs / f"throughput-{name}.log", threads=os.cpu_count() or 1)
        # the compiled run may not take the time the chain and poisoning parts need
        limit = Clock(max(10.0, clock.left() - (args.budget_s * 0.6 if name == "compiled" else 0)))
        status = wait_all({name: process}, limit)[name]
        result[name] = {"status": status, "seconds": round(time.perf_counter() - started, 1), **(read_json(out) or {})}
    return result


def chain_epochs(sizes: Sizes, measured: dict) -> tuple[int, str]:
    """Pre-training epochs of 50,000 images (two views each) that fit the budget at a third of the rate
    measured at batch 512: the poisoning part shares the GPU, and the chain pre-trains at `pretrain`'s
    batch of 128, which keeps the GPU less busy."""
    rows = {row["command"]: row for row in (measured.get("plain") or {}).get("rows", [])}
    low, high = sizes.pretrain_epochs
    if "pretrain" not in rows:
        return low, "no throughput measured: the fewest epochs"
    rate = rows["pretrain"]["ours_views_per_s"] / 3
    epochs = int(sizes.pretrain_seconds * rate / (2 * 50_000))
    return max(low, min(high, epochs)), f"{sizes.pretrain_seconds:.0f} s at a third of {3 * rate:,.0f} views/s"


def chain_command(args: argparse.Namespace, sizes: Sizes, epochs: int, attacks: tuple[str, ...],
                  defenses: tuple[str, ...], *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "cifar_chain.py"), "--archive", str(args.archive), "--arch", sizes.arch,
            "--pretrain-epochs", str(epochs), "--attacks", *attacks, "--poison-epochs", str(sizes.poison_epochs),
            "--num-references", str(sizes.references), "--defenses", *defenses, "--device", args.device,
            "--threads", "2", "--cache", str(args.work / "cifar"), *extra]


def chain_stages(sizes: Sizes) -> list[list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """The chain's encoders in stages of (attacks, defenses) runs, each stage's runs side by side as
    processes sharing one cache: pre-training; each attack; each defense of each attack."""
    return [[((), ())],
            [((attack,), ()) for attack in sizes.chain_attacks],
            [((attack,), (defense,)) for attack in sizes.chain_attacks for defense in sizes.chain_defenses]]


def chain(args: argparse.Namespace, sizes: Sizes, epochs: int, clock: Clock) -> dict[str, object]:
    """Make the chain's encoders stage by stage (stopping the makers `chain_reserve_s` before the deadline),
    then evaluate and scan whatever was made in one run; the exit status of each process."""
    status: dict[str, object] = {}
    seconds: dict[str, float] = {}
    makers = Clock(max(0.0, clock.left() - sizes.chain_reserve_s))
    for stage in chain_stages(sizes):
        processes, outputs = {}, {}
        for attacks, defenses in stage:
            name = "chain-" + ("-".join(attacks + defenses) or "pretrain")
            outputs[name] = args.work / f"{name}.json"
            processes[name] = launch(chain_command(args, sizes, epochs, attacks, defenses, "--make-only",
                                                   "--json-out", str(outputs[name])),
                                     args.logs / f"{name}.log", threads=2)
        status.update(wait_all(processes, makers))
        for output in outputs.values():
            seconds.update((read_json(output) or {}).get("seconds", {}))
        if makers.left() <= 0:
            break
    final = chain_command(args, sizes, epochs, sizes.chain_attacks, sizes.chain_defenses, "--cached-only",
                          "--json-out", str(args.out / "chain.json"))
    status.update(wait_all({"chain": launch(final, args.logs / "chain.log", threads=8)}, clock))
    result = read_json(args.out / "chain.json") or {}
    result["seconds"] = {**seconds, **result.get("seconds", {})}
    (args.out / "chain.json").write_text(json.dumps(result, indent=2, default=str))
    return status


def poisoning_command(args: argparse.Namespace, target: int) -> list[str]:
    return [sys.executable, str(HERE / "gpu_check.py"), "--poisoning-worker", str(target), "--out", str(args.out),
            "--work", str(args.work), "--archive", str(args.archive), "--device", args.device] + \
        (["--smoke"] if args.smoke else [])


def scores(report) -> dict:
    """ACC, ASR and ASR non-target of the one encoder an `ec.evaluate` report holds."""
    row = report.encoders[0].as_dict()
    return {key: row[key] for key in ("acc", "asr", "asr_nontarget")}


def poisoning_subset(args: argparse.Namespace, sizes: Sizes):
    """The first `poisoning_per_class` training images of each CIFAR-10 class, and the whole test split."""
    import torch

    import encoder_clean as ec
    from cifar_chain import prepare_data
    from encoder_clean.data.dataset import Dataset

    spec, _ = prepare_data(args.archive, args.work / "cifar")
    full = ec.load_data(spec)
    per_class = [torch.nonzero(full.train.labels == k).flatten()[:sizes.poisoning_per_class]
                 for k in range(full.num_classes)]
    return Dataset(f"{full.name}[{sizes.poisoning_per_class} per class]", full.train.subset(torch.cat(per_class)),
                   full.test, full.num_classes, full.class_names)


def clean_victim_worker(args: argparse.Namespace, sizes: Sizes, attack: str) -> None:
    """The baseline of a data-poisoning row: the same victim pre-trained the same way on the clean subset,
    evaluated with the attack's trigger at each target class; writes clean-victim-ATTACK.json."""
    import encoder_clean as ec
    from encoder_clean.attacks import get_attack
    from encoder_clean.cli.progress import PlainProgress

    method, epochs = next((m, e) for a, m, e in sizes.victims if a == attack)
    subset = poisoning_subset(args, sizes)
    started, rows = time.perf_counter(), []
    with open(args.logs / f"clean-victim-{attack}.log", "w") as log:
        progress = PlainProgress(log)
        config = ec.PretrainConfig(arch=sizes.poisoning_arch, method=method, epochs=epochs, batch_size=sizes.batch)
        path = args.work / f"clean-victim-{attack}.safetensors"
        ec.pretrain(subset, config, device=args.device, progress=progress).save(path)
        seconds = round(time.perf_counter() - started, 1)
        for target in POISONING_TARGETS:
            evaluated = ec.EvalConfig(trigger=get_attack(attack).default_trigger, target_class=target)
            report = ec.evaluate([path], subset, evaluated, device=args.device, progress=progress)
            rows.append({"attack": f"none (clean {method}, {attack}'s trigger)", "victim": method, "epochs": epochs,
                         "target_class": target, "training_images": len(subset.train), "poisoned_images": 0,
                         **scores(report), "poison_seconds": seconds})
    (args.out / f"clean-victim-{attack}.json").write_text(json.dumps({"rows": rows}, indent=2))
    print(json.dumps(rows, indent=2))


def poisoning_worker(args: argparse.Namespace, sizes: Sizes, target: int) -> None:
    """BASSL and CTRL at their published epochs on a balanced subset, target class `target`; writes
    poisoning-TARGET.json after every encoder."""
    import torch

    import encoder_clean as ec
    from encoder_clean.cli.progress import PlainProgress

    torch.set_num_threads(4)
    subset = poisoning_subset(args, sizes)
    folder = args.work / f"poisoning-{target}"
    folder.mkdir(parents=True, exist_ok=True)
    random_init = folder / "random.safetensors"
    ec.pretrain(subset, ec.PretrainConfig(arch=sizes.poisoning_arch, epochs=0), device=args.device).save(random_init)
    rows, out = [], args.out / f"poisoning-{target}.json"
    for attack, method, epochs in sizes.victims:
        started = time.perf_counter()
        with open(args.logs / f"poisoning-{attack}-{target}.log", "w") as log:
            progress = PlainProgress(log)
            config = ec.PoisonConfig(attack=attack, target_class=target, epochs=epochs, batch_size=sizes.batch,
                                     options={"method": method})
            poisoned = ec.poison(random_init, subset, config, device=args.device, progress=progress)
            path = folder / f"{attack}.safetensors"
            poisoned.save(path)
            poison_seconds = time.perf_counter() - started
            report = ec.evaluate([path], subset, ec.EvalConfig(), device=args.device, progress=progress)
            scanned = ec.scan(path, subset, device=args.device, progress=progress)
        rows.append({"attack": attack, "victim": method, "epochs": epochs, "target_class": target,
                     "training_images": len(subset.train), "poisoned_images": poisoned.report.get("poisoned_images"),
                     **scores(report), "verdict": scanned.verdict, "score": scanned.score,
                     "threshold": scanned.threshold, "poison_seconds": round(poison_seconds, 1),
                     "seconds": round(time.perf_counter() - started, 1)})
        out.write_text(json.dumps({"arch": sizes.poisoning_arch, "data": subset.name, "rows": rows}, indent=2))
        print(f"{attack} target {target}: {rows[-1]}", flush=True)


# ------------------------------------------------------------------------------------------ report
def publish_returned(path: Path, results: Path | None = None, json_dir: Path | None = None) -> list[str]:
    """The sections gpu-throughput, gpu-chain and gpu-poisoning of RESULTS.md (and results/NAME.json) from a
    gpu_check.json the device returned, with the device run's own command, commit and machine; returns the
    names of the sections written."""
    import results as published

    summary = json.loads(path.read_text())
    written = []
    for name, title, rows, columns, notes in sections(summary):
        if rows:
            published.publish(name, title, rows, columns, notes=notes, results=results or published.RESULTS,
                              json_dir=json_dir or published.JSON_DIR, provenance=summary["provenance"])
            written.append(name)
    return written


def sections(summary: dict) -> list[tuple[str, str, list[dict], list[tuple[str, str]], str]]:
    """(name, title, rows, columns, notes) of each table the summary holds."""
    def part(key: str) -> dict:  # a part that did not finish is None or missing
        return summary.get(key) or {}

    def percent(share: float | None) -> float | None:
        return None if share is None else round(100 * share, 1)

    def whole(rate: float | None) -> int | None:
        return None if rate is None else round(rate)

    measured = part("throughput")
    plain, compiled = measured.get("plain") or {}, measured.get("compiled") or {}
    faster = {row["command"]: row for row in compiled.get("rows", [])}
    throughput_rows = []
    for row in plain.get("rows", []):
        fast = faster.get(row["command"], {})
        throughput_rows.append({"command": row["command"], "ours": whole(row["ours_views_per_s"]),
                                "naive": whole(row.get("naive_views_per_s")), "ratio": row.get("ratio"),
                                "mfu_ours": percent(row["mfu_ours"]), "mfu_naive": percent(row.get("mfu_naive")),
                                "compiled": whole(fast.get("ours_views_per_s")),
                                "mfu_compiled": percent(fast.get("mfu_ours")), "wall_s": row.get("wall_s")})
    chain = part("chain")
    chain_rows = [{"encoder": name, **{k: row.get(k) for k in ("acc", "asr", "asr_nontarget", "verdict", "score")}}
                  for name, row in (chain.get("rows") or {}).items()]
    parts = [f"poisoning-{target}" for target in POISONING_TARGETS] + \
        [f"clean-victim-{attack}" for attack, _, _ in FULL.victims]
    poisoning = [row for key in parts for row in part(key).get("rows", [])]
    first = part("poisoning-0")
    return [
        ("gpu-throughput", "GPU throughput: image-views per second, ours and the naive loop (alone on the GPU)",
         throughput_rows,
         [("command", "command"), ("ours", "ours views/s"), ("naive", "naive views/s"), ("ratio", "ratio"),
          ("mfu_ours", "ours MFU %"), ("mfu_naive", "naive MFU %"), ("compiled", "ours compiled views/s"),
          ("mfu_compiled", "compiled MFU %"), ("wall_s", "wall s")],
         plain.get("setup", "") + (f"; compiled run: {compiled.get('setup')}" if compiled else "")
         + (f". {summary['throughput_note']}" if summary.get("throughput_note") else "")),
        ("gpu-chain", f"GPU: the chain on real CIFAR-10 ({summary.get('chain_epochs_why', '')})", chain_rows,
         [("encoder", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"), ("asr_nontarget", "ASR non-target %"),
          ("verdict", "scan"), ("score", "scan score")],
         "Step seconds (each stage's runs side by side on the same GPU: the attacks together, then every "
         "defense of every attack together; " + ("beside the poisoning part): " if first else "no other part): ")
         + json.dumps(chain.get("seconds"))),
        ("gpu-poisoning", "GPU: BASSL and CTRL at their papers' pre-training epochs", poisoning,
         [("attack", "attack"), ("victim", "victim"), ("epochs", "epochs"), ("target_class", "target"),
          ("training_images", "images"), ("poisoned_images", "poisoned"), ("acc", "ACC %"), ("asr", "ASR %"),
          ("asr_nontarget", "ASR non-target %"), ("verdict", "scan"), ("score", "scan score"),
          ("poison_seconds", "poison s")],
         f"{first.get('arch', '')} on {first.get('data', '')}; beside the chain on the same GPU."
         + (f" {summary['poisoning_note']}" if summary.get("poisoning_note") else "")),
    ]


def markdown(summary: dict) -> str:
    from results import markdown_table

    parts = [f"# GPU check\n\n{summary['device']}; torch {summary['torch']}; {summary['elapsed_s']} s in all.\n"]
    for _, title, rows, columns, notes in sections(summary):
        if rows:
            parts.append(f"## {title}\n\n" + markdown_table(rows, columns) + f"\n\n{notes}")
    parts.append("## Status\n\n```\n" + json.dumps(summary["status"], indent=2) + "\n```")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the figures go (on the device: $OUT); required to run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"), help="data and encoders made on the way")
    parser.add_argument("--archive", type=Path, default=ROOT / ".gpu" / "cifar10-jpg.tar.gz")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=470.0, help="stop everything this many seconds in")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the script on the CPU")
    parser.add_argument("--chain-epochs", type=int, default=None,
                        help="the chain's pre-training epochs (default: as many as fit the budget)")
    parser.add_argument("--naive-workers", type=int, default=None,
                        help="DataLoader workers of the naive loop (default: 8; 0 is DataLoader's own default)")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="skip the throughput part's second run, with --compile")
    parser.add_argument("--throughput-workloads", nargs="+", default=None, metavar="COMMAND",
                        help="time only these commands (default: all four)")
    parser.add_argument("--throughput-steps", type=int, default=None, help="timed steps per loop (default: 30)")
    parser.add_argument("--commit", default=None, help="the commit checked out (the device's copy has no .git)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="GPU_CHECK_JSON",
                        help="run nothing: with --publish, put the tables of a gpu_check.json the device returned "
                             "into benchmarks/RESULTS.md")
    add_publish_arguments(parser)
    parser.add_argument("--poisoning-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clean-victim", choices=[a for a, _, _ in FULL.victims], default=None,
                        help="only the baseline of one data-poisoning row: its victim pre-trained on the clean subset")
    args = parser.parse_args()
    if args.from_json:
        if args.publish:
            print("published: " + ", ".join(publish_returned(args.from_json)))
        else:
            print(markdown(json.loads(args.from_json.read_text())))
        return
    if args.out is None:
        parser.error("--out is required to run the check")
    sizes = SMOKE if args.smoke else FULL
    if args.naive_workers is not None:
        sizes = replace(sizes, workers=args.naive_workers)
    if not args.compiled:
        sizes = replace(sizes, compile_workloads=())
    if args.throughput_steps:
        sizes = replace(sizes, steps=args.throughput_steps)
    args.logs = args.work / "logs"  # outside --out: the device returns at most 8 files, so they travel as one tar
    args.out.mkdir(parents=True, exist_ok=True)
    args.logs.mkdir(parents=True, exist_ok=True)
    if args.poisoning_worker is not None:
        poisoning_worker(args, sizes, args.poisoning_worker)
        return
    if args.clean_victim is not None:
        clean_victim_worker(args, sizes, args.clean_victim)
        return

    import torch

    from cifar_chain import prepare_data

    clock = Clock(args.budget_s)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.device} ({os.cpu_count()} cores)"
    from results import provenance_here

    provenance = provenance_here()
    provenance["commit"] = args.commit or provenance["commit"]
    summary: dict[str, object] = {"device": device, "torch": torch.__version__, "sizes": asdict(sizes),
                                  "provenance": provenance, "status": {}}
    started = time.perf_counter()
    prepare_data(args.archive, args.work / "cifar")  # once, before the parts that read it run side by side
    summary["status"]["data_s"] = round(time.perf_counter() - started, 1)

    def write() -> None:
        summary["elapsed_s"] = clock.elapsed()
        for target in POISONING_TARGETS:
            summary[f"poisoning-{target}"] = read_json(args.out / f"poisoning-{target}.json")
        for attack, _, _ in sizes.victims:
            summary[f"clean-victim-{attack}"] = read_json(args.out / f"clean-victim-{attack}.json")
        summary["chain"] = summary.get("chain") or read_json(args.out / "chain.json")
        (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str))
        (args.out / "gpu_check.md").write_text(markdown(summary))

    if "throughput" in args.parts:
        summary["throughput"] = throughput(args, sizes, clock)
        summary["status"]["throughput"] = {k: v["status"] for k, v in summary["throughput"].items()}
        write()
    if args.chain_epochs:
        epochs, why = args.chain_epochs, "set by --chain-epochs"
    else:
        epochs, why = chain_epochs(sizes, summary.get("throughput") or {})
    summary["chain_epochs"], summary["chain_epochs_why"] = epochs, f"{sizes.arch}, {epochs} pre-training epochs: {why}"
    processes = {}
    if "poisoning" in args.parts:
        for target in POISONING_TARGETS:
            processes[f"poisoning-{target}"] = launch(poisoning_command(args, target),
                                                      args.logs / f"poisoning-{target}.log", threads=4)
    if "chain" in args.parts:  # in this process, beside the poisoning part's processes
        summary["status"].update(chain(args, sizes, epochs, clock))
    summary["status"].update(wait_all(processes, clock))
    write()
    with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
        tar.add(args.logs, arcname="logs")
        chain_logs = args.work / "cifar" / "logs"
        if chain_logs.is_dir():
            tar.add(chain_logs, arcname="chain-steps")
    print((args.out / "gpu_check.md").read_text())
    failed = failures(summary["status"])
    for name in failed:  # the end of each failed part's log, since on the device only stdout comes back whole
        log = args.logs / f"{name}.log"
        print(f"--- {name} failed; the end of {log.name}:\n" + "\n".join(log.read_text().splitlines()[-20:]))
    sys.exit(1 if failed else 0)


def failures(status: dict) -> list[str]:
    """The processes that exited with an error (a stop at the deadline is not one)."""
    flat = {**{f"throughput-{k}": v for k, v in (status.get("throughput") or {}).items()},
            **{k: v for k, v in status.items() if k != "throughput"}}
    return [name for name, code in flat.items() if isinstance(code, int) and code != 0 and name != "data_s"]


if __name__ == "__main__":
    main()
