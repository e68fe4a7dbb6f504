"""Does each pre-training method pay? Linear-probe ACC of `pretrain --method M` against the random init.

Runs what `encoder-clean pretrain` and `encoder-clean evaluate` run, through the Python API in-process,
on the CPU with one thread: pre-trains the architecture on `--data` with every method for the same
epochs, writes the random initialisation (0 epochs), and evaluates them all on `--eval-data` (default:
the pre-training data and, for built-in data, the other family) with a linear probe, the white-square
trigger and target 0. With --publish the table goes to benchmarks/RESULTS.md (section `ssl-methods`).

    python benchmarks/ssl_methods.py [--methods simclr mocov2 byol] [--epochs 3] [--data builtin:shapes]
        [--batch-size byol=32] [--warmup-steps byol=93] [--option byol:tau=0 ...] [--eval-data SPEC ...]
        [--arch resnet18-cifar-w16] [--out-dir benchmarks/cache] [--section ssl-methods] [--publish [--load TEXT]]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import encoder_clean as ec
from method_settings import batch_sizes, method_options, pretrain_config, run_tag, settings_of, warmup_steps
from results import add_publish_arguments, publish

FAMILIES = ("builtin:shapes", "builtin:glyphs")


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in spec).strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "mocov2", "byol"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--eval-data", nargs="+", default=None)
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--batch-size", nargs="+", default=[], metavar="[METHOD=]N",
                        help="pre-training batch of every method or one (default: pretrain's)")
    parser.add_argument("--warmup-steps", nargs="+", default=[], metavar="[METHOD=]N",
                        help="learning-rate warm-up steps, for every method or one (default: pretrain's)")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="a pre-training setting of one method (as `pretrain -o`)")
    parser.add_argument("--section", default="ssl-methods", help="the RESULTS.md section --publish writes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache"))
    add_publish_arguments(parser)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the figures are one-thread figures, whatever the machine
    evaluated_on = args.eval_data or ([args.data, *(f for f in FAMILIES if f != args.data)]
                                      if args.data in FAMILIES else [args.data])
    batch = batch_sizes(args.batch_size, args.methods)
    warmup = warmup_steps(args.warmup_steps, args.methods)
    options = method_options(args.option, args.methods, parser)
    stem = f"{args.arch}_{slug(args.data)}_s{args.seed}"

    def settings(method: str) -> str:
        given = settings_of(batch[method], options[method]) + ([f"warm-up {warmup[method]}"] if warmup[method] else [])
        return f" ({', '.join(given)})" if given else ""

    run = {"device": "cpu", "seed": args.seed}

    random = args.out_dir / f"random_{stem}.safetensors"
    ec.pretrain(args.data, ec.PretrainConfig(arch=args.arch, epochs=0), **run).save(random)
    encoders = {"random init": random}
    runs = {}
    for method in args.methods:
        tag = run_tag(method, args.epochs, batch[method], options[method]) + (f"_w{warmup[method]}" if warmup[method] else "")
        out = args.out_dir / f"{tag}_{stem}.safetensors"
        started = time.perf_counter()
        steps = {"warmup_steps": warmup[method]} if warmup[method] else {}
        config = pretrain_config(method, args.epochs, batch[method], options[method], arch=args.arch, **steps)
        result = ec.pretrain(args.data, config, **run)
        result.save(out)
        runs[method] = (result, time.perf_counter() - started)
        encoders[method + settings(method)] = out

    setup = (f"{args.arch} pre-trained on {args.data} for {args.epochs} epochs, one CPU thread; "
             "linear probe, white-square trigger, target 0")
    print(f"\n{setup}")
    training = [f"{method}{settings(method)}: {result.report['steps']} steps, {wall:.1f} s wall with the save "
                f"({result.seconds:.1f} s in ec.pretrain), final loss {result.report['final_loss']:.4f}"
                for method, (result, wall) in runs.items()]
    for line in training:
        print(f"  {line}")
    print(f"\n| evaluated on | encoder | ACC % | gain over random init | ASR % | ASR non-target % |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    table = []
    for data in evaluated_on:
        report = ec.evaluate(list(encoders.values()), data, ec.EvalConfig(trigger="white-square", target_class=0),
                             device="cpu")
        rows = dict(zip(encoders, report.as_dict()["encoders"]))
        base = rows["random init"]["acc"]
        for name, row in rows.items():
            gain = None if name == "random init" else round(row["acc"] - base, 2)
            shown = "" if gain is None else f"{row['acc'] - base:+.2f}"
            print(f"| {data} | {name} | {row['acc']:.2f} | {shown} | {row['asr']:.2f} | {row['asr_nontarget']:.2f} |")
            table.append({"evaluated_on": data, "encoder": name, "acc": row["acc"], "gain": gain, "asr": row["asr"],
                          "asr_nontarget": row["asr_nontarget"]})
    if args.publish:
        publish(args.section, f"Pre-training methods ({args.arch} on {args.data}, {args.epochs} epochs)", table,
                [("evaluated_on", "evaluated on"), ("encoder", "encoder"), ("acc", "ACC %"),
                 ("gain", "gain over random init"), ("asr", "ASR %"), ("asr_nontarget", "ASR non-target %")],
                load=args.load, notes=f"{setup}. " + "; ".join(training) + ".")


if __name__ == "__main__":
    main()
