"""Cached-feature probe vs a probe that runs the frozen backbone every epoch, in one run.

Both fit `evaluate`'s linear probe with the same seed and iterations on the same frozen encoder; the
only difference is whether features are computed once (what `evaluate` does) or recomputed from the
images at every epoch (what a naive loop does). Prints wall time, accuracy and the speed-up; with
--publish they go to benchmarks/RESULTS.md (section `probe-cache`).

    python benchmarks/probe_cache.py [--encoder CKPT] [--epochs 100] [--train 5000] [--publish [--load TEXT]]
"""

from __future__ import annotations

import argparse
import time

import torch

from encoder_clean.data.builtin import make_builtin
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import load_encoder
from encoder_clean.evaluate.features import extract_features
from encoder_clean.evaluate.probe import (_linear, make_lbfgs, predict, probe_config, regularised_loss,
                                          train_probe)
from results import add_publish_arguments, publish


def uncached_probe(encoder, images, labels, num_classes, config, seed):
    """The naive loop: the same L-BFGS fit, but every evaluation of the loss (one epoch over the
    training images) runs the frozen backbone on all images again instead of reading cached features."""
    device = images.device
    torch.manual_seed(seed)
    # The probe's standardisation statistics need one pass, as in the cached probe.
    probe = _linear(extract_features(encoder, images, device=device), num_classes)
    optimizer = make_lbfgs(probe, config)

    def closure():
        optimizer.zero_grad(set_to_none=True)
        features = extract_features(encoder, images, device=device)  # the backbone, every epoch
        loss = regularised_loss(probe, features, labels, config.weight_decay)
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", help="checkpoint (default: a random resnet18-cifar-w16)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--train", type=int, default=5000)
    add_publish_arguments(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = load_encoder(args.encoder).encoder if args.encoder else create_encoder("resnet18-cifar-w16")
    encoder.eval()
    data = make_builtin("shapes", train=args.train, test=2000)
    device = torch.device("cpu")
    config = probe_config("linear", epochs=args.epochs)
    test_feats = extract_features(encoder, data.test.images, device=device)

    start = time.perf_counter()
    train_feats = extract_features(encoder, data.train.images, device=device)
    cached = train_probe(train_feats, data.train.labels, 10, config, seed=0)
    cached_seconds = time.perf_counter() - start
    cached_acc = 100 * (predict(cached, test_feats) == data.test.labels).float().mean().item()

    start = time.perf_counter()
    naive = uncached_probe(encoder, data.train.images, data.train.labels, 10, config, seed=0)
    naive_seconds = time.perf_counter() - start
    naive_acc = 100 * (predict(naive, test_feats) == data.test.labels).float().mean().item()

    setup = (f"linear probe (L-BFGS, at most {args.epochs} iterations), {args.train} training images, "
             f"{torch.get_num_threads()} CPU threads")
    print(setup)
    print(f"{'probe':<28}{'seconds':>10}{'test ACC %':>12}")
    rows = [{"probe": "cached features (ours)", "seconds": round(cached_seconds, 2), "acc": round(cached_acc, 2)},
            {"probe": "backbone every epoch", "seconds": round(naive_seconds, 2), "acc": round(naive_acc, 2)}]
    for row in rows:
        print(f"{row['probe']:<28}{row['seconds']:>10.2f}{row['acc']:>12.2f}")
    print(f"speed-up: {naive_seconds / cached_seconds:.1f}x")
    if args.publish:
        encoder_name = args.encoder or "a random resnet18-cifar-w16"
        publish("probe-cache", "Cached features against the backbone every epoch (linear probe)", rows,
                [("probe", "probe"), ("seconds", "seconds"), ("acc", "test ACC %")], load=args.load,
                notes=f"{setup}; encoder {encoder_name}, builtin:shapes; "
                      f"speed-up {naive_seconds / cached_seconds:.1f}x.")


if __name__ == "__main__":
    main()
