"""Precision switches: bf16 on the CPU only inside `cpu_bf16`, and only where the CPU supports it."""

from __future__ import annotations

import torch

from encoder_clean import runtime

CPU = torch.device("cpu")


def _dtype_under_autocast() -> torch.dtype:
    with runtime.autocast(CPU):
        return torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype


def test_cpu_stays_fp32_by_default_and_after_the_block():
    assert _dtype_under_autocast() == torch.float32
    with runtime.cpu_bf16() as on:
        assert on == runtime.cpu_supports_bf16()
        assert _dtype_under_autocast() == (torch.bfloat16 if on else torch.float32)
    assert _dtype_under_autocast() == torch.float32


def test_cpu_bf16_can_be_declined_and_restores_on_error():
    with runtime.cpu_bf16(False) as on:
        assert not on and _dtype_under_autocast() == torch.float32
    try:
        with runtime.cpu_bf16():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert _dtype_under_autocast() == torch.float32
