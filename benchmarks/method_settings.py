"""Per-method settings on a benchmark's command line, shared by ssl_methods.py and ssl_victims.py:
`VALUE` or `METHOD=VALUE` items (epochs, batch size) and `METHOD:KEY=VALUE` pre-training options."""

from __future__ import annotations

import argparse

import encoder_clean as ec


def per_method(given: list[str], methods: list[str], default: str) -> dict[str, str]:
    """`VALUE` (every method) or `METHOD=VALUE` items as one value per method."""
    values = dict.fromkeys(methods, default)
    for item in given:
        method, _, value = item.rpartition("=")
        for name in [method] if method else methods:
            values[name] = value
    return values


def optional_counts(given: list[str], methods: list[str]) -> dict[str, int | None]:
    """`N` or `METHOD=N` items as one whole number per method; None where none is given (`pretrain`'s default)."""
    return {m: int(v) if v else None for m, v in per_method(given, methods, "").items()}


batch_sizes = optional_counts  # each method's batch size
warmup_steps = optional_counts  # each method's learning-rate warm-up steps


def method_options(given: list[str], methods: list[str], parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """`METHOD:KEY=VALUE` items as each method's list of `KEY=VALUE` settings (as `pretrain -o` takes)."""
    options: dict[str, list[str]] = {m: [] for m in methods}
    for item in given:
        method, _, setting = item.partition(":")
        if method not in options or "=" not in setting:
            parser.error(f"--option {item}: expected METHOD:KEY=VALUE with METHOD in {', '.join(methods)}")
        options[method].append(setting)
    return options


def settings_of(batch_size: int | None, options: list[str]) -> list[str]:
    """What a run sets beyond the defaults, for a table: `["batch 32", "tau=0"]`."""
    return ([f"batch {batch_size}"] if batch_size else []) + options


def pretrain_config(method: str, epochs: int, batch_size: int | None, options: list[str],
                    **fields: object) -> ec.PretrainConfig:
    """The run's `PretrainConfig`, with `pretrain`'s default batch where `batch_size` is None."""
    batch = {"batch_size": batch_size} if batch_size else {}
    return ec.PretrainConfig(method=method, epochs=epochs, options=tuple(options), **batch, **fields)


def run_tag(method: str, epochs: int, batch_size: int | None, options: list[str]) -> str:
    """A file-name tag of one method's run: `byol_e3_b32_tau0_predictor_lr10` (no `_b` at the default batch)."""
    batch = f"_b{batch_size}" if batch_size else ""
    return f"{method}_e{epochs}{batch}" + "".join(f"_{o.replace('=', '')}" for o in options)
