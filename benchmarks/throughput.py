"""Image-views per second of each training command's step: our pipeline against a naive reference loop.

    python benchmarks/throughput.py [--device cpu|cuda] [--arch resnet18-cifar-w16] [--batch-size 128]
        [--steps 30] [--workers N] [--compile] [--no-naive] [--json-out rows.json] [--publish [--load TEXT]]

With --publish the table goes to benchmarks/RESULTS.md (section `throughput-cpu` or `throughput-cuda`).

Ours is the library's own code, as the commands run it: the data resident on the device as uint8,
batched augmentation on the device, bf16 autocast and fused optimisers on CUDA, channels_last, the
training-loop core (no host sync inside a step except every 10th for logging). It is timed by the
loop's own progress reports, from the first report (after 10 warm-up steps) to the last, so setup and
warm-up are not counted. With --compile the training loop compiles the models it trains (the commands'
`--compile`), and the compiling is paid in the warm-up; evaluate's feature pass is not compiled.

The naive loop is what the papers' code does: a torchvision DataLoader over PIL images with per-image
transforms (`--workers` processes), fp32, default memory format, the optimiser's default kernels, and a
`loss.item()` every step. Its model, losses and optimiser settings are ours.

An image-view is one image through the trained model: pretrain and distill take two views of each
image (distill also runs the teacher on them), poison takes the clean and triggered shadow images and
the reference images twice, evaluate's feature extraction one per image. MFU is the model FLOPs of a
step (counted by torch.utils.flop_counter) per second over the matmul rate measured in the same run
(bf16 on CUDA, fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder_clean.attacks.badencoder import BadEncoderConfig, badencoder_terms, run_badencoder  # noqa: E402
from encoder_clean.attacks.registry import AttackInputs  # noqa: E402
from encoder_clean.data.builtin import make_builtin  # noqa: E402
from encoder_clean.distill.losses import FEATURES, parse_loss_spec  # noqa: E402
from encoder_clean.distill.trainer import DistillConfig, LossTerms, distill, tap_widths  # noqa: E402
from encoder_clean.encoders import create_encoder  # noqa: E402
from encoder_clean.evaluate.features import extract_features  # noqa: E402
from encoder_clean.pretrain import PretrainLoopConfig, nt_xent, pretrain_encoder  # noqa: E402
from encoder_clean.pretrain.simclr import SimCLRSettings  # noqa: E402
from encoder_clean.runtime import compiling, prepare_model, resolve_device  # noqa: E402
from encoder_clean.triggers import load_trigger  # noqa: E402
from results import add_publish_arguments, publish  # noqa: E402

TRIGGER = "white-square"
REFERENCES = BadEncoderConfig().num_references


# ------------------------------------------------------------------------------------------ timing
class LoopTimer:
    """A Progress that notes when the loop reports (after a host sync): steady-state seconds per step."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float]] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        done = 0

        def advance(n: int = 1, **fields: float) -> None:
            nonlocal done
            done += n
            self.marks.append((done, time.perf_counter()))

        yield advance

    def seconds_per_unit(self) -> float:
        (first, t0), (last, t1) = self.marks[0], self.marks[-1]
        if last <= first:
            raise SystemExit("too few steps to time: raise --steps")
        return (t1 - t0) / (last - first)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device) -> float:
    """FLOP/s of a large square matrix multiply in the precision our steps use on `device`."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, start = (50 if device.type == "cuda" else 5), time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def step_flops(step: Callable[[], torch.Tensor]) -> float:
    """Model FLOPs of one step (forward and backward), counted on the real tensors."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss = step()
        if loss.requires_grad:
            loss.backward()
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------ naive data
def to_pil(images_u8: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(image) for image in images_u8.permute(0, 2, 3, 1).numpy()]


def simclr_transform(size: int) -> T.Compose:
    """The same augmentation as our default 'strong' preset, one PIL image at a time."""
    return T.Compose([T.RandomResizedCrop(size, scale=(0.3, 1.0)), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.8, 0.5)], p=0.8), T.RandomGrayscale(0.5),
                      T.ToTensor()])


class TwoViews(Dataset):
    def __init__(self, images: list[Image.Image], size: int):
        self.images, self.transform = images, simclr_transform(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)


class Shadow(Dataset):
    """BadEncoder's shadow data as the public code builds it: the clean image and an augmented,
    triggered copy, made per image with PIL."""

    def __init__(self, images: list[Image.Image], size: int, trigger: np.ndarray, mask: np.ndarray):
        self.images, self.transform = images, simclr_transform(size)
        self.trigger, self.mask, self.plain = trigger, mask, T.ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        view = np.asarray(self.transform(image).permute(1, 2, 0).numpy() * 255, dtype=np.float32)
        stamped = view * (1 - self.mask) + self.trigger * self.mask
        return self.plain(image), torch.from_numpy(stamped / 255).permute(2, 0, 1).float()


class Plain(Dataset):
    def __init__(self, images: list[Image.Image]):
        self.images, self.transform = images, T.ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


def loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def naive_loop(batches: DataLoader, step: Callable[[object], torch.Tensor], optimizer: torch.optim.Optimizer | None,
               steps: int, device: torch.device, warmup: int = 3) -> float:
    """Seconds per step of the papers' loop, after `warmup` steps (workers started, caches warm)."""
    done, start, iterator = 0, None, iter(batches)
    while done < warmup + steps:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            batch = next(iterator)
        if done == warmup:
            sync(device)
            start = time.perf_counter()
        if optimizer is not None:
            optimizer.zero_grad()
            loss = step(batch)
            loss.backward()
            optimizer.step()
            loss.item()  # the per-step logging every public loop does
        else:
            with torch.no_grad():
                step(batch)
        done += 1
    sync(device)
    return (time.perf_counter() - start) / steps


# ------------------------------------------------------------------------------------ workloads
class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        count = args.batch_size * (args.steps + 10)
        data = make_builtin("shapes", train=max(count, 2000), test=10, seed=0)
        self.images_u8 = data.train.images[:count]
        labels = data.train.labels
        self.targets_u8 = data.train.images[labels == 0][:REFERENCES]
        self.pil = to_pil(self.images_u8)

    def encoder(self, head: bool = True):
        torch.manual_seed(0)
        model = create_encoder(self.args.arch)
        if head:
            model.add_head()
        return model

    def ours(self, run: Callable[[LoopTimer], None]) -> float:
        timer = LoopTimer()
        with compiling(self.args.compile):
            run(timer)
        return timer.seconds_per_unit()

    def naive(self, batches: DataLoader, step: Callable[[object], torch.Tensor],
              optimizer: torch.optim.Optimizer | None, steps: int | None = None, warmup: int = 3) -> float | None:
        """Seconds per step of the naive loop, or None under --no-naive."""
        if not self.args.naive:
            return None
        return naive_loop(batches, step, optimizer, steps or self.args.steps, self.device, warmup)

    # pretrain ------------------------------------------------------------------
    def pretrain(self) -> dict:
        b, device = self.args.batch_size, self.device
        images = self.images_u8.to(device)
        config = PretrainLoopConfig(epochs=1, batch_size=b)
        ours = self.ours(lambda timer: pretrain_encoder(prepare_model(self.encoder(), device), images, config,
                                                        seed=0, device=device, progress=timer))
        model = self.encoder().to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        def step(batch) -> torch.Tensor:
            v1, v2 = (v.to(device, non_blocking=True) for v in batch)
            z = model.project(model.features(torch.cat([v1, v2])))
            return nt_xent(z[:len(v1)], z[len(v1):], SimCLRSettings().temperature)

        batches = loader(TwoViews(self.pil, model.image_size), b, self.args.workers)
        naive = self.naive(batches, step, optimizer)
        flops = step_flops(lambda: step(next(iter(loader(TwoViews(self.pil, model.image_size), b, 0)))))
        return {"views": 2 * b, "ours": ours, "naive": naive, "flops": flops}

    # poison (BadEncoder) --------------------------------------------------------
    def poison(self) -> dict:
        b, device = self.args.batch_size, self.device
        config = BadEncoderConfig(epochs=1, batch_size=b)

        def run(timer: LoopTimer) -> None:
            model = prepare_model(self.encoder(), device)
            inputs = AttackInputs(model, self.images_u8.to(device), self.targets_u8.to(device), TRIGGER, 0, device,
                                  0, timer)
            run_badencoder(inputs, config)

        ours = self.ours(run)
        student = self.encoder().to(device).eval()
        clean = self.encoder().to(device).eval().requires_grad_(False)
        trigger = load_trigger(TRIGGER, student.image_size)
        pattern = trigger.pattern.permute(1, 2, 0).numpy() * 255
        mask = trigger.mask.permute(1, 2, 0).numpy()
        references = torch.stack([T.ToTensor()(p) for p in to_pil(self.targets_u8)]).to(device)
        reference_views = TwoViews(to_pil(self.targets_u8), student.image_size)
        optimizer = torch.optim.Adam(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        def embed(model, x):
            return F.normalize(model.features(x), dim=1)

        def step(batch) -> torch.Tensor:
            shadow, triggered = (v.to(device, non_blocking=True) for v in batch)
            views = torch.stack([reference_views[i][0] for i in range(len(reference_views))]).to(device)
            with torch.no_grad():
                clean_shadow, clean_refs = embed(clean, shadow), embed(clean, references)
            parts = [shadow, triggered, references, views]
            out = embed(student, torch.cat(parts)).split([len(p) for p in parts])
            terms = badencoder_terms(dict(zip(["shadow", "triggered", "references", "reference_views"], out)),
                                     clean_shadow, clean_refs, anchor_references=config.anchor_references)
            return terms["l0"] + config.lambda1 * terms["l1"] + config.lambda2 * terms["l2"]

        shadow = Shadow(self.pil, student.image_size, pattern, mask)
        naive = self.naive(loader(shadow, b, self.args.workers), step, optimizer)
        flops = step_flops(lambda: step(next(iter(loader(shadow, b, 0)))))
        return {"views": 2 * b + 2 * REFERENCES, "ours": ours, "naive": naive, "flops": flops}

    # distill (the recommended losses: AFD on the four stages plus NT-Xent) -----
    def distill(self) -> dict:
        b, device = self.args.batch_size, self.device
        config = DistillConfig(epochs=1, batch_size=b)
        teacher = self.encoder()
        specs = [parse_loss_spec("afd", teacher.tap_names, teacher.attention_taps)]
        images = self.images_u8.to(device)

        def run(timer: LoopTimer) -> None:
            distill(prepare_model(self.encoder(), device), prepare_model(self.encoder(), device), images, specs,
                    config, seed=0, device=device, progress=timer)

        ours = self.ours(run)
        teacher = self.encoder().to(device).eval().requires_grad_(False)
        student = self.encoder().to(device).train()
        wanted = sorted({tap for spec in specs for tap in spec.taps})
        terms = LossTerms(specs, tap_widths(student, wanted, device), tap_widths(teacher, wanted, device)).to(device)
        optimizer = torch.optim.Adam(list(student.parameters()) + list(terms.parameters()), lr=config.lr,
                                     weight_decay=config.weight_decay)

        def step(batch) -> torch.Tensor:
            views = torch.cat([v.to(device, non_blocking=True) for v in batch])
            with torch.no_grad():
                t_features, t_maps = teacher.features_with_taps(views, terms.taps)
            s_features, s_maps = student.features_with_taps(views, terms.taps)
            loss, _ = terms({FEATURES: s_features, **s_maps}, {FEATURES: t_features, **t_maps})
            z = student.project(s_features)
            return loss + config.contrastive_weight * nt_xent(z[:b], z[b:], config.temperature)

        batches = loader(TwoViews(self.pil, student.image_size), b, self.args.workers)
        naive = self.naive(batches, step, optimizer)
        flops = step_flops(lambda: step(next(iter(loader(TwoViews(self.pil, student.image_size), b, 0)))))
        return {"views": 2 * b, "ours": ours, "naive": naive, "flops": flops}

    # evaluate's feature extraction -----------------------------------------------
    def evaluate(self) -> dict:
        device, b = self.device, 512
        model = prepare_model(self.encoder(head=False), device).eval()
        images = self.images_u8.to(device)
        extract_features(model, images[:b], device=device)  # warm-up
        sync(device)
        start = time.perf_counter()
        extract_features(model, images, device=device, batch_size=b)
        sync(device)
        ours = (time.perf_counter() - start) / (len(images) / b)
        plain = self.encoder(head=False).to(device).eval()
        steps = max(1, min(self.args.steps, len(images) // b))
        naive = self.naive(loader(Plain(self.pil), b, self.args.workers, shuffle=False),
                           lambda batch: plain.features(batch.to(device, non_blocking=True)), None, steps, warmup=1)
        with torch.no_grad():
            flops = step_flops(lambda: plain.features(torch.rand(b, 3, plain.image_size, plain.image_size,
                                                                 device=device)))
        return {"views": b, "ours": ours, "naive": naive, "flops": flops}


WORKLOADS = ("pretrain", "poison", "distill", "evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="measured steps per loop (ours: after 10 warm-up)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader worker processes of the naive loop")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--compile", action="store_true", help="compile the trained models (the commands' --compile)")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="time only ours")
    parser.add_argument("--json-out", type=Path, default=None)
    add_publish_arguments(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    bench = Bench(args, device)
    ceiling = matmul_rate(device)
    setup = (f"{args.arch}, batch {args.batch_size}, {args.steps} steps, device {device}"
             f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
             f"{torch.get_num_threads()} threads, naive loader workers {args.workers}"
             f"{', ours compiled' if args.compile else ''}; matmul ceiling {ceiling / 1e12:.2f} TFLOP/s")
    print(setup)
    rows, shown = [], []  # shown: the printed figures, for --publish
    print("| command | ours views/s | naive views/s | ratio | ours MFU | naive MFU | GFLOP/view |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.workloads:
        started = time.perf_counter()
        row = throughput_row(name, getattr(bench, name)(), ceiling)
        row["wall_s"] = round(time.perf_counter() - started, 1)  # compiling, warm-up and both loops
        rows.append(row)
        shown.append({"command": name, "ours": round(row["ours_views_per_s"]), "naive": row["naive_views_per_s"],
                      "ratio": row["ratio"], "mfu_ours": round(100 * row["mfu_ours"], 1),
                      "mfu_naive": None if row["mfu_naive"] is None else round(100 * row["mfu_naive"], 1),
                      "gflop_per_view": row["gflop_per_view"]})
        print(markdown_row(row), flush=True)
        if args.json_out:  # after every row, so a run stopped early keeps what it measured
            args.json_out.write_text(json.dumps({"device": str(device), "arch": args.arch, "setup": setup,
                                                 "compile": args.compile, "ceiling_flops": ceiling, "rows": rows},
                                                indent=2))
    if args.publish:
        title = f"Throughput: image-views per second, ours and a naive loop ({device.type})"
        columns = [("command", "command"), ("ours", "ours views/s"), ("naive", "naive views/s"), ("ratio", "ratio"),
                   ("mfu_ours", "ours MFU %"), ("mfu_naive", "naive MFU %"), ("gflop_per_view", "GFLOP/view")]
        publish(f"throughput-{device.type}", title, shown, columns, load=args.load, notes=setup + ".")


def throughput_row(name: str, result: dict, ceiling: float) -> dict:
    """Views per second, the ratio and MFU of one workload's timings (naive ones None when not timed)."""
    ours = result["views"] / result["ours"]
    naive = None if result["naive"] is None else result["views"] / result["naive"]
    return {"command": name, "ours_views_per_s": round(ours, 1),
            "naive_views_per_s": None if naive is None else round(naive, 1),
            "ratio": None if naive is None else round(ours / naive, 2),
            "mfu_ours": round(result["flops"] / result["ours"] / ceiling, 4),
            "mfu_naive": None if naive is None else round(result["flops"] / result["naive"] / ceiling, 4),
            "gflop_per_view": round(result["flops"] / result["views"] / 1e9, 3)}


def markdown_row(row: dict) -> str:
    def shown(value, fmt: str, unit: str = "") -> str:
        return "-" if value is None else format(value, fmt) + unit

    naive_mfu = None if row["mfu_naive"] is None else 100 * row["mfu_naive"]
    return (f"| {row['command']} | {row['ours_views_per_s']:,.0f} | {shown(row['naive_views_per_s'], ',.0f')} | "
            f"{shown(row['ratio'], '.2f', 'x')} | {100 * row['mfu_ours']:.1f}% | {shown(naive_mfu, '.1f', '%')} | "
            f"{row['gflop_per_view']:.3f} |")


if __name__ == "__main__":
    main()
