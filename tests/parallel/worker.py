"""A few SimCLR steps through the training-loop core, run alone or as one rank under torchrun.

`python worker.py OUT [--batch N] [--steps N]` writes the trained weights to OUT (rank 0 only). Used by
test_parallel.py to compare a two-process gloo run with one process on the same global batch.
"""

from __future__ import annotations

import argparse

import torch

from encoder_clean.data.augment import augmentation, simclr_augment
from encoder_clean.data.builtin import make_builtin
from encoder_clean.encoders import create_encoder
from encoder_clean.parallel import joined, world
from encoder_clean.pretrain import nt_xent
from encoder_clean.runtime import device_generator
from encoder_clean.training import EpochBatcher, run_steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu")
    torch.set_num_threads(1)
    with joined(device):
        torch.manual_seed(0)
        encoder = create_encoder("resnet10-cifar-w8").add_head().train()
        images = make_builtin("shapes", train=64, test=8, seed=0).train.images
        g = device_generator(device, 1)
        batches = iter(EpochBatcher(len(images), args.batch, g, device))
        optimizer = torch.optim.SGD(encoder.parameters(), lr=0.01)
        augment = augmentation("strong")

        def step(_: int) -> torch.Tensor:
            batch = images[next(batches)]
            views = torch.cat([simclr_augment(batch, 32, g, augment), simclr_augment(batch, 32, g, augment)])
            z = encoder.project(encoder.features(views))
            return nt_xent(z[:batch.shape[0]], z[batch.shape[0]:], 0.5)

        run_steps(step, optimizer, args.steps, state={"encoder": encoder, "generator": g, "batches": batches})
        if world().is_main:
            torch.save(encoder.state_dict(), args.out)


if __name__ == "__main__":
    main()
