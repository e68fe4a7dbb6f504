"""Data parallelism over the processes torchrun launches: one per GPU (NCCL), or CPU processes (gloo).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `joined` starts the process group from them. Every rank
holds the whole dataset and draws the same random numbers, so each batch order and each augmentation
parameter is decided once for the global batch and a rank keeps its own rows (`local_rows`,
`draw_rows`). DistributedDataParallel averages the gradients (`replicated`), BatchNorm statistics and
NT-Xent negatives cover the global batch (`GlobalBatchNorm`, `gather_rows`): a parallel run computes
what one process does with the same global batch, within float rounding. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn

from encoder_clean.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (rank 0 of 1 when run alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_ALONE = World()
_world = _ALONE


def world() -> World:
    return _world


def launched_world() -> World:
    """The world torchrun described in the environment (alone when not launched by it)."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if "WORLD_SIZE" not in os.environ:
        return _ALONE
    try:
        rank, size, local = (int(os.environ.get(name, "0")) for name in names)
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UserError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local}")
    return World(rank, size, local)


def parallel_device(device: torch.device) -> torch.device:
    """Each rank of a CUDA run takes the GPU of its local rank."""
    if device.type != "cuda" or not _world.parallel:
        return device
    if _world.local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {_world.local_rank} has no GPU: this machine has {torch.cuda.device_count()}")
    torch.cuda.set_device(_world.local_rank)
    return torch.device("cuda", _world.local_rank)


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[World]:
    """Within the block, this process is one rank of torchrun's process group (if torchrun started it)."""
    global _world
    launched = launched_world()
    if not launched.parallel:
        yield _world
        return
    _world = launched
    try:
        device = parallel_device(device)  # NCCL wants each rank on its own GPU before the group forms
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=launched.rank, world_size=launched.size)
    except (RuntimeError, ValueError, UserError) as error:
        _world = _ALONE
        if isinstance(error, UserError):
            raise
        raise UserError(f"cannot join the torchrun process group: {str(error).splitlines()[0]}") from None
    try:
        yield _world
    finally:
        dist.destroy_process_group()
        _world = _ALONE


# --------------------------------------------------------------------------- sharding the batch
def local_rows(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch (the batch size is a multiple of the world)."""
    if not _world.parallel:
        return batch
    share = batch.shape[0] // _world.size
    return batch[_world.rank * share:(_world.rank + 1) * share]


def draw_rows(draw: Callable[[int], torch.Tensor], rows: int) -> torch.Tensor:
    """`draw(n)` random values for `rows` local samples: the whole global batch's values are drawn on
    every rank (so the generators stay in step) and this rank keeps its rows."""
    if not _world.parallel:
        return draw(rows)
    return local_rows(draw(rows * _world.size))


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's rows; the gradient of each rank's rows is summed over the ranks (each
    rank's loss used them) and handed back to their owner."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        ctx.rows = local.shape[0]
        parts = [torch.empty_like(local) for _ in range(_world.size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[_world.rank * ctx.rows:(_world.rank + 1) * ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; every rank's loss depends on the sum, so the gradient is summed too."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        total = values.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows in rank order, with gradients flowing back to their owners, and where this
    rank's rows start in it."""
    if not _world.parallel:
        return local, 0
    return _AllGather.apply(local), _world.rank * local.shape[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of a tensor over the ranks."""
    if not _world.parallel:
        return values
    return _AllReduceSum.apply(values)


# --------------------------------------------------------------------------- BatchNorm over the world
class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover every rank's rows (any input rank, any backend:
    torch's SyncBatchNorm refuses CPU tensors). Its state dict is BatchNorm's: `replicated` swaps the
    class of a model's BatchNorm layers for the run and back."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and _world.parallel):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        values = input.float()
        count = torch.tensor([values.numel() / values.shape[1]], device=values.device)
        totals = all_reduce_sum(torch.cat([values.sum(dims), (values * values).sum(dims), count]))
        channels = values.shape[1]
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean * mean).clamp(min=0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_((var * n / (n - 1).clamp(min=1)).detach(), momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (values - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextlib.contextmanager
def _global_batch_norm(modules: list[nn.Module]) -> Iterator[None]:
    swapped: list[tuple[nn.Module, type]] = []
    for module in modules:
        for layer in module.modules():
            if type(layer) in _BATCH_NORMS:
                swapped.append((layer, type(layer)))
                layer.__class__ = GlobalBatchNorm
    try:
        yield
    finally:
        for layer, cls in swapped:
            layer.__class__ = cls


# --------------------------------------------------------------------------- gradients over the world
class _Step(nn.Module):
    """Holds the optimised parameters so DistributedDataParallel can average their gradients; its
    forward runs a step function, which uses the real modules (sharing those parameters)."""

    def __init__(self, parameters: list[nn.Parameter]):
        super().__init__()
        self.held = nn.ParameterList(parameters)

    def forward(self, step: Callable[..., Any], *args: Any) -> Any:
        return step(*args)


def _direct(step: Callable[..., Any], *args: Any) -> Any:
    return step(*args)


@contextlib.contextmanager
def replicated(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> Iterator[Callable[..., Any]]:
    """Yield `call(step, *args)`, which runs a training step; across ranks its gradients are averaged
    by DistributedDataParallel and the BatchNorm layers of the models in `state` use global statistics."""
    if not _world.parallel:
        yield _direct
        return
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    modules = [value for value in state.values() if isinstance(value, nn.Module)]
    with torch.no_grad():  # same starting buffers everywhere (BatchNorm running statistics)
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)
    device = parameters[0].device if parameters else torch.device("cpu")
    holder = _Step(parameters)
    ddp = nn.parallel.DistributedDataParallel(
        holder, device_ids=[device] if device.type == "cuda" else None, static_graph=True)
    with _global_batch_norm(modules):
        yield ddp
