"""Device, precision, seeding and progress reporting shared by every command.

The library reports progress through the small `Progress` protocol below and never prints; the CLI
passes a rich-backed implementation (see `encoder_clean.cli.render`).
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable, ContextManager, Iterable, Iterator, Protocol

import numpy as np
import torch

from encoder_clean.errors import UserError
from encoder_clean.parallel import parallel_device

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Map `auto|cpu|cuda[:N]` to a torch device; `auto` picks CUDA when present. In a data-parallel
    CUDA run each rank takes the GPU of its local rank."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return parallel_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but no CUDA device is available")
        return parallel_device(torch.device(name))
    raise UserError(f"unknown device {name!r}: use auto, cpu or cuda")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data-side randomness."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator living on `device`, so random batch ops never sync with the host."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


_cpu_bf16 = False  # opt-in, see cpu_bf16


def cpu_supports_bf16() -> bool:
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


@contextlib.contextmanager
def cpu_bf16(enabled: bool = True) -> Iterator[bool]:
    """Within the block, `autocast` uses bf16 on the CPU too where the CPU computes bf16 natively
    (AVX512-BF16): 1.58x per training step of resnet18-cifar-w16 (benchmarks/cpu_precision.py). Off by
    default so that commands stay in exact fp32. Yields whether bf16 is on."""
    global _cpu_bf16
    previous = _cpu_bf16
    _cpu_bf16 = enabled and cpu_supports_bf16()
    try:
        yield _cpu_bf16
    finally:
        _cpu_bf16 = previous


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA (and on the CPU inside `cpu_bf16`); otherwise full precision."""
    if device.type == "cuda" or (device.type == "cpu" and _cpu_bf16):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run a block with one intra-op CPU thread (no effect on CUDA work), restoring the count after."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def mode_kept(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block the caller may switch `module` to eval mode or freeze its parameters; on the way
    out its training mode and every parameter's requires_grad flag are as they were before."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    try:
        yield module
    finally:
        module.train(was_training)
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


RESIDENT_SHARE = 0.5  # of the GPU's free memory that a dataset may take on the device


def place_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Training images (uint8) where the steps read them: on the device when they take at most half its
    free memory, else in pinned host memory, from which `take` streams each batch."""
    if device.type != "cuda":
        return images.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() <= RESIDENT_SHARE * free:
        return images.to(device)
    return images.pin_memory()


def take(images: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The rows `index` of `images` on `device`: a gather on the device when the images live there, else
    gathered on the host into pinned memory and copied without blocking (`index` lives with the images:
    give the batcher `images.device`)."""
    if images.device.type == device.type:
        return images[index]
    return torch.index_select(images, 0, index.to(images.device)).pin_memory().to(device, non_blocking=True)


def fused(device: torch.device) -> dict[str, bool]:
    """Optimiser options: one fused kernel per step on CUDA (the CPU keeps torch's default, whose
    results the measured CPU figures were made with)."""
    return {"fused": True} if device.type == "cuda" else {}


_compile = False  # opt-in, see compiling


@contextlib.contextmanager
def compiling(enabled: bool = True) -> Iterator[None]:
    """Within the block, the training loop compiles the models it trains (`compile_modules`)."""
    global _compile
    previous, _compile = _compile, enabled
    try:
        yield
    finally:
        _compile = previous


def compile_modules(modules: Iterable[torch.nn.Module]) -> None:
    """Inside `compiling`, compile each child of `modules` in place with torch.compile (the encoders
    are called through several methods, not one forward, so their parts are compiled, not the whole).
    The state dict keeps its keys. Already compiled parts are left as they are."""
    if not _compile:
        return
    for module in modules:
        for child in module.children():
            if getattr(child, "_compiled_call_impl", None) is None and any(True for _ in child.parameters()):
                # static shapes: a network's stages share one forward (Sequential's) at different shapes, and
                # torch's automatic dynamic shapes would then trade every stage's kernels for generic ones
                # (measured on an H200: pretrain 36,006 views/s compiled that way against 46,894 eager)
                child.compile(dynamic=False)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a model to the device in channels_last layout (faster convolutions on CUDA and CPU alike)."""
    return model.to(device=device, memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------- progress
Advance = Callable[..., None]


class Progress(Protocol):
    """What long-running library code needs from a progress display."""

    def task(self, description: str, total: int | None) -> ContextManager[Advance]:
        """Open a task; the returned callable advances it: `advance(n=1, **fields)`."""
        ...


class NullProgress:
    """Progress that shows nothing (library default, tests, `--quiet`)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda n=1, **fields: None


NULL_PROGRESS = NullProgress()
