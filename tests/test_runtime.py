"""Precision switches: bf16 on the CPU only inside `cpu_bf16`, and only where the CPU supports it; `mode_kept`."""

from __future__ import annotations

import pytest
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


def test_mode_kept_restores_training_mode_and_gradient_flags_even_on_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train()
    model[1].weight.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with runtime.mode_kept(model):
            model.eval().requires_grad_(False)
            raise RuntimeError("interrupted")
    assert model.training and [p.requires_grad for p in model.parameters()] == [True, True, False, True]
