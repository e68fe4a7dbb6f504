"""A few steps of each pre-training method through the training-loop core, alone or as one rank under
torchrun. `python worker.py OUT [--steps N]` writes each method's encoder and objective state to OUT
(rank 0 only). SGD, so that float rounding is not amplified as Adam's first steps amplify it."""

from __future__ import annotations

import argparse

import torch

from encoder_clean.data.augment import augmentation
from encoder_clean.data.builtin import make_builtin
from encoder_clean.encoders import create_encoder
from encoder_clean.parallel import joined, world
from encoder_clean.pretrain import Schedule, get_method, two_views
from encoder_clean.runtime import device_generator
from encoder_clean.training import EpochBatcher, run_steps

# (name in the output, method, settings)
RUNS = (("simclr", "simclr", ()), ("mocov2", "mocov2", ()), ("mocov2-symmetric", "mocov2", ("symmetric=true",)),
        ("byol", "byol", ()), ("byol-direct", "byol", ("predictor=direct",)))


def train(name: str, method_name: str, options: tuple[str, ...], images: torch.Tensor, batch: int, steps: int
          ) -> dict[str, torch.Tensor]:
    device = torch.device("cpu")
    torch.manual_seed(0)
    encoder = create_encoder("resnet10-cifar-w8").add_head().train()
    start = {f"{name}/start/{k}": v.clone() for k, v in encoder.state_dict().items()}
    g = device_generator(device, 1)
    batcher = EpochBatcher(len(images), batch, g, device)
    method = get_method(method_name)
    objective = method.build(encoder, method.settings(options), Schedule(steps, batcher.batch_size, len(images), g))
    batches = iter(batcher)
    trained = [*encoder.parameters(), *(p for p in objective.parameters() if p.requires_grad)]
    optimizer = torch.optim.SGD(trained, lr=0.01)

    def step(_: int) -> torch.Tensor:
        # contiguous views: with channels_last, one process's gradients differ from the contiguous
        # layout's by up to 1% (measured: sums in another order, cancelling through the BatchNorm
        # layers), which would hide what this compares
        views = two_views(images[next(batches)], 32, g, augmentation("strong")).contiguous()
        return objective.loss(encoder, views, device)

    run_steps(step, optimizer, steps, state={"encoder": encoder, "objective": objective, "generator": g,
                                             "batches": batches}, after_step=lambda: objective.update(encoder))
    return {**start, **{f"{name}/encoder/{k}": v for k, v in encoder.state_dict().items()},
            **{f"{name}/objective/{k}": v for k, v in objective.state_dict().items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with joined(torch.device("cpu")):
        images = make_builtin("shapes", train=64, test=8, seed=0).train.images
        state: dict[str, torch.Tensor] = {}
        for name, method, options in RUNS:
            state.update(train(name, method, options, images, args.batch, args.steps))
        if world().is_main:
            torch.save(state, args.out)


if __name__ == "__main__":
    main()
