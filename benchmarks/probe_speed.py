"""The MLP probe (`evaluate --probe mlp`) against a plain PyTorch loop of the same steps.

Both train the same MLP (512 -> 512 -> 256 -> classes, dropout 0.5) with Adam lr 1e-4 on batches of 64
cached features for the same number of epochs. The probe runs as `evaluate` calls it, with torch's
default thread count; the plain loop runs with `--plain-threads` (default 1, its fastest on a small
CPU). Prints both times and their ratio; with --publish they go to benchmarks/RESULTS.md (section
`probe-speed`).

    python benchmarks/probe_speed.py --epochs 5 [--publish [--load TEXT]]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from encoder_clean.evaluate.probe import get_probe, probe_config, train_probe
from results import add_publish_arguments, publish


def features(count: int, dim: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(count, dim, generator=g), dim=1), torch.randint(0, classes, (count,), generator=g)


def plain_loop(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int, threads: int) -> tuple[float, int]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_probe("mlp").build(x, classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    steps = 0
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            index = order[start:start + 64]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    seconds = time.perf_counter() - started
    torch.set_num_threads(previous)
    return seconds, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--images", type=int, default=10_000, help="training features (the builtin split's size)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--plain-threads", type=int, default=1)
    add_publish_arguments(parser)
    args = parser.parse_args()
    x, y = features(args.images, args.dim, args.classes)
    default_threads = torch.get_num_threads()
    started = time.perf_counter()
    train_probe(x, y, args.classes, probe_config("mlp", args.epochs), seed=0)
    ours = time.perf_counter() - started
    plain, steps = plain_loop(x, y, args.classes, args.epochs, args.plain_threads)
    setup = f"{steps} steps ({args.epochs} epochs of {args.images} {args.dim}-d features, batch 64)"
    print(setup)
    rows = [{"loop": name, "seconds": round(seconds, 2), "ms_per_step": round(1000 * seconds / steps, 2)}
            for name, seconds in ((f"evaluate's MLP probe ({default_threads} torch threads by default)", ours),
                                  (f"plain PyTorch loop ({args.plain_threads} thread(s))", plain))]
    for row in rows:
        print(f"{row['loop']}: {row['seconds']:.2f} s, {row['ms_per_step']:.2f} ms/step")
    print(f"ratio probe / plain: {ours / plain:.2f}")
    if args.publish:
        publish("probe-speed", "The MLP probe against a plain PyTorch loop", rows,
                [("loop", "loop"), ("seconds", "seconds"), ("ms_per_step", "ms/step")], load=args.load,
                notes=f"{setup}; ratio probe / plain {ours / plain:.2f}.")


if __name__ == "__main__":
    main()
