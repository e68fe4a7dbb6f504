"""Is bf16 autocast worth it on this CPU? Seconds per training step of the small encoders, fp32 vs bf16.

One step = forward and backward of a batch of 32x32 images through the encoder in channels_last, the
layout every command uses. bf16 is what `runtime.cpu_bf16()` turns on (the demo does); it needs a
CPU with native bf16 (AVX512-BF16), which the script reports. With --publish the table goes to
benchmarks/RESULTS.md (section `cpu-precision`).

    python benchmarks/cpu_precision.py [--archs resnet18-cifar-w16 resnet10-cifar-w8] [--batch 256] [--steps 5]
        [--publish [--load TEXT]]
"""

from __future__ import annotations

import argparse
import time

import torch

from encoder_clean.encoders import create_encoder
from encoder_clean.runtime import autocast, cpu_bf16, cpu_supports_bf16, prepare_model
from results import add_publish_arguments, publish


def seconds_per_step(arch: str, batch: int, steps: int, bf16: bool) -> float:
    with cpu_bf16(bf16):
        return _seconds_per_step(arch, batch, steps)


def _seconds_per_step(arch: str, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = prepare_model(create_encoder(arch).train(), device)
    images = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast(device):
            loss = model.features(images).float().pow(2).mean()
        loss.backward()

    step()  # warm-up: allocations and kernel selection
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18-cifar-w16", "resnet10-cifar-w8"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    add_publish_arguments(parser)
    args = parser.parse_args()
    supported = cpu_supports_bf16()
    setup = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {supported}")
    print(setup)
    print("| arch | fp32 s/step | bf16 s/step | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    rows = []
    for arch in args.archs:
        fp32 = seconds_per_step(arch, args.batch, args.steps, False)
        bf16 = seconds_per_step(arch, args.batch, args.steps, True) if supported else float("nan")
        print(f"| {arch} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f}x |", flush=True)
        rows.append({"arch": arch, "fp32": round(fp32, 3), "bf16": round(bf16, 3) if supported else None,
                     "speedup": round(fp32 / bf16, 2) if supported else None})
    if args.publish:
        publish("cpu-precision", "bf16 autocast on the CPU: seconds per training step", rows,
                [("arch", "arch"), ("fp32", "fp32 s/step"), ("bf16", "bf16 s/step"), ("speedup", "speed-up")],
                load=args.load, notes=f"{setup}; batch {args.batch} of 32x32 images, channels_last, "
                                      f"mean of {args.steps} steps after one warm-up.")


if __name__ == "__main__":
    main()
