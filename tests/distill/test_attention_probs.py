"""`attn-prob` and the attention taps of transformers: probabilities as the library computes them, a loss
that is zero for equal attention, positive otherwise, reaches only the student, and trains in `distill`."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.distill.losses import get_loss, parse_loss_spec
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from encoder_clean.errors import UserError

pytest.importorskip("timm")
VIT = "vit-p4-d4-w64"


def _attention(seed: int, requires_grad: bool = False) -> torch.Tensor:
    torch.manual_seed(seed)
    encoder = create_encoder(VIT).eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.set_grad_enabled(requires_grad):
        return encoder.features_with_taps(images, ["attn.1"])[1]["attn.1"]


def test_attention_taps_match_timms_own_attention():
    torch.manual_seed(0)
    encoder = create_encoder(VIT).eval()
    images = torch.rand(2, 3, 32, 32)
    ours = encoder.features_with_taps(images, ["attn.2"])[1]["attn.2"]
    seen = {}
    attn = encoder.model.blocks[2].attn
    attn.fused_attn = False  # timm's explicit path passes the probabilities through attn_drop
    handle = attn.attn_drop.register_forward_hook(lambda module, inputs, output: seen.setdefault("p", output))
    with torch.no_grad():
        encoder.features(images)
    handle.remove()
    torch.testing.assert_close(ours, seen["p"])
    assert ours.shape == (2, 4, 65, 65)  # 4 heads over the class token and 8 x 8 patches
    torch.testing.assert_close(ours.sum(-1), torch.ones(2, 4, 65))


def test_loss_is_zero_for_equal_attention_and_positive_otherwise():
    loss = get_loss("attn-prob").build(4, 4)
    teacher, other = _attention(0), _attention(1)
    assert float(loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(other, teacher)) > 1e-4


def test_gradient_reaches_the_student_only():
    student, teacher = _attention(1, requires_grad=True), _attention(0, requires_grad=True)
    student.retain_grad()
    get_loss("attn-prob").build(4, 4)(student, teacher.detach()).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_other_head_counts_compare_and_maps_are_refused():
    loss = get_loss("attn-prob").build(2, 4)
    assert float(loss(_attention(1)[:, :2], _attention(0))) > 0
    with pytest.raises(UserError, match="attn.N"):
        loss(torch.rand(2, 8, 4, 5), torch.rand(2, 8, 4, 5))


def test_default_taps_are_every_attention_tap():
    encoder = create_encoder(VIT)
    spec = parse_loss_spec("attn-prob", encoder.tap_names, encoder.attention_taps)
    assert spec.taps == ("attn.0", "attn.1", "attn.2", "attn.3")
    with pytest.raises(UserError):  # a ResNet has no attention taps
        parse_loss_spec("attn-prob@attn.0", ("layer1",))


def test_distill_trains_with_attention_transfer(tmp_path):
    teacher = tmp_path / "vit.safetensors"
    torch.manual_seed(0)
    save_encoder(create_encoder(VIT), teacher, produced_by="test")
    out = tmp_path / "student.safetensors"
    result = CliRunner().invoke(app, ["distill", str(teacher), "--loss", "attn-prob", "--loss", "afd@blocks.3",
                                      "--data", "builtin?train=64&test=20", "--clean-fraction", "0.5", "--epochs", "1",
                                      "--batch-size", "16", "--finetune", "none", "-o", "warmup_epochs=1", "--quiet",
                                      "--out", str(out), "--json", "-"])
    assert result.exit_code == 0, result.output
    assert "attn-prob=1@attn.0,attn.1,attn.2,attn.3" in result.stdout
