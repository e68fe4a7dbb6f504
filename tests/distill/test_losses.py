"""Distillation losses: every registered kind is zero when the student equals the teacher, positive when
they differ, trains the student (and its own connector) but never the teacher, and copes with narrower
students; a few kinds are checked against their definitions; `--loss` specs parse with defaults."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encoder_clean.distill.losses import (FEATURES, LossSpec, get_loss, list_losses, parse_loss_spec,
                                          register_loss)
from encoder_clean.distill.losses.registry import ATTENTION, STAGES
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError

LAYER_TAPS = ("layer1", "layer2", "layer3", "layer4")
STUDENT_ARCH = "resnet10-cifar-w8"  # channels 8..64, features 64
TEACHER_ARCH = "resnet18-cifar-w16"  # channels 16..128, features 128
TOKEN_LOSSES = ("attn-prob",)  # on transformers' attention taps only: tests/distill/test_attention_probs.py
LOSSES = sorted(set(list_losses()) - set(TOKEN_LOSSES))
MAPS_ONLY = ("at", "nad", "afd")  # no meaning on the pooled embedding: they raise on `features`


def _images(count: int = 8) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _encoder(arch: str, seed: int):
    torch.manual_seed(seed)
    return create_encoder(arch, head=False)


def _default_taps(name: str) -> tuple[str, ...]:
    kind = get_loss(name)
    return LAYER_TAPS if kind.default_taps == STAGES else tuple(kind.default_taps)


def _outputs(encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer map and the pooled features, keyed by tap name."""
    features, maps = encoder.features_with_taps(images, LAYER_TAPS)
    return {**maps, FEATURES: features}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tensors this small gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    # spinning threads made this file 20x slower (80 s against 3 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_outputs() -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return _outputs(_encoder(STUDENT_ARCH, 0).eval(), _images())


@pytest.fixture(scope="module")
def other_outputs() -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return _outputs(_encoder(STUDENT_ARCH, 1).eval(), _images())


def _loss(name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return get_loss(name).build(student.shape[1], teacher.shape[1])(student, teacher)


def _value(name: str, student: torch.Tensor, teacher: torch.Tensor) -> float:
    return float(_loss(name, student, teacher).detach())


# ------------------------------------------------------------------------------ every registered loss
def test_the_losses_are_registered_with_sane_metadata():
    assert {"at", "nad", "afd", "fitnet", "cc", "kd", "sp", "similarity", "rkd", "pkt"} <= set(LOSSES)
    for name, kind in list_losses().items():
        assert kind.group in {"attention", "feature", "relation", "layer"}, name
        assert 0 < kind.default_weight < math.inf, name
        assert kind.default_taps in (STAGES, ATTENTION) or set(kind.default_taps) <= {*LAYER_TAPS, FEATURES}, name
    with pytest.raises(ValueError, match="twice"):
        register_loss(get_loss("at"))


@pytest.mark.parametrize("name", LOSSES)
def test_zero_when_student_equals_teacher(name, teacher_outputs):
    for tap in _default_taps(name):
        teacher = teacher_outputs[tap]
        value = _loss(name, teacher.clone(), teacher)
        assert value.dim() == 0
        assert abs(float(value.detach())) < 1e-6, (tap, float(value.detach()))


@pytest.mark.parametrize("name", LOSSES)
def test_positive_when_student_differs(name, teacher_outputs, other_outputs):
    for tap in _default_taps(name):
        assert _value(name, other_outputs[tap], teacher_outputs[tap]) > 0, tap


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_reaches_the_student_tensor_only(name, teacher_outputs, other_outputs):
    for tap in _default_taps(name):
        student = other_outputs[tap].clone().requires_grad_(True)
        teacher = teacher_outputs[tap].clone().requires_grad_(True)
        _loss(name, student, teacher.detach()).backward()  # as the trainer passes the teacher
        assert student.grad is not None and student.grad.abs().sum() > 0, tap
        assert teacher.grad is None, tap


@pytest.mark.parametrize("name", LOSSES)
def test_student_parameters_train_and_teacher_parameters_do_not(name):
    images = _images()
    teacher = _encoder(STUDENT_ARCH, 0).eval()
    student = _encoder(STUDENT_ARCH, 1).train()
    with torch.no_grad():
        teacher_taps = _outputs(teacher, images)
    student_taps = _outputs(student, images)
    total = sum(_loss(name, student_taps[tap], teacher_taps[tap]) for tap in _default_taps(name))
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("name", LOSSES)
def test_narrow_student_against_wide_teacher(name):
    """resnet10-cifar-w8 (8..64 channels) against resnet18-cifar-w16 (16..128): connectors take up the
    difference and train with the student."""
    images = _images()
    teacher = _encoder(TEACHER_ARCH, 0).eval()
    student = _encoder(STUDENT_ARCH, 1).train()
    with torch.no_grad():
        teacher_taps = _outputs(teacher, images)
    student_taps = _outputs(student, images)
    kind = get_loss(name)
    modules, total = [], 0
    for tap in _default_taps(name):
        module = kind.build(student_taps[tap].shape[1], teacher_taps[tap].shape[1])
        value = module(student_taps[tap], teacher_taps[tap])
        assert value.dim() == 0 and torch.isfinite(value), tap
        modules.append(module)
        total = total + value
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for module in modules:  # a loss's own parameters (connector, AFD's attention) train too
        for parameter in module.parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("student_size", [16, 4])
def test_maps_of_another_spatial_size(name, student_size):
    torch.manual_seed(0)
    student = torch.randn(6, 8, student_size, student_size, requires_grad=True)
    teacher = torch.randn(6, 16, 8, 8)
    value = _loss(name, student, teacher)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("name", LOSSES)
def test_features_tap_is_supported_or_refused_clearly(name, teacher_outputs, other_outputs):
    student, teacher = other_outputs[FEATURES], teacher_outputs[FEATURES]
    if name in MAPS_ONLY:
        with pytest.raises(UserError, match="layer taps"):
            _loss(name, student, teacher)
        return
    try:
        value = _loss(name, student, teacher)
    except UserError as error:  # a new map-only loss must say so the same way
        assert "layer taps" in str(error)
        return
    assert value.dim() == 0 and torch.isfinite(value) and float(value.detach()) > 0
    assert abs(_value(name, teacher.clone(), teacher)) < 1e-6


@pytest.mark.parametrize("name", LOSSES)
def test_a_batch_of_one_gives_a_finite_loss(name, teacher_outputs, other_outputs):
    for tap in _default_taps(name):
        student = other_outputs[tap][:1].clone().requires_grad_(True)
        value = _loss(name, student, teacher_outputs[tap][:1])
        assert value.dim() == 0 and torch.isfinite(value), tap
        value.backward()
        assert torch.isfinite(student.grad).all(), tap


# ------------------------------------------------------------------------------ individual definitions
def _rotation(dim: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(3)))
    return q


@pytest.mark.parametrize("name, transform", [
    ("sp", lambda x: 2.5 * x),
    ("at", lambda x: 3.0 * x),
    ("nad", lambda x: -3.0 * x),
    ("similarity", lambda x: 2.0 * x @ _rotation(x.shape[1])),
    ("pkt", lambda x: 2.0 * x @ _rotation(x.shape[1])),
    ("rkd", lambda x: 2.0 * x @ _rotation(x.shape[1]) + 5.0),
])
def test_invariances(name, transform, teacher_outputs):
    teacher = teacher_outputs["layer4" if name in MAPS_ONLY else FEATURES]
    assert abs(_value(name, transform(teacher), teacher)) < 1e-4


def test_at_and_nad_agree_for_p2(teacher_outputs, other_outputs):
    for tap in LAYER_TAPS:
        at = _loss("at", other_outputs[tap], teacher_outputs[tap])
        nad = _loss("nad", other_outputs[tap], teacher_outputs[tap])
        assert torch.allclose(at, nad, rtol=1e-5, atol=1e-9)


def test_sp_is_one_minus_cosine():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[0.0, 2.0], [0.0, 3.0]])  # orthogonal, then parallel
    assert _value("sp", student, teacher) == pytest.approx(0.5)


def test_kd_matches_the_kl_of_softened_distributions():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 12), torch.randn(5, 12)
    temperature = 0.5
    expected = F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                        reduction="batchmean") * temperature ** 2
    assert torch.allclose(_loss("kd", student, teacher), expected, rtol=1e-5)


def test_fitnet_is_the_mse_at_equal_widths(teacher_outputs, other_outputs):
    for tap in (*LAYER_TAPS, FEATURES):
        expected = F.mse_loss(other_outputs[tap], teacher_outputs[tap])
        assert torch.allclose(_loss("fitnet", other_outputs[tap], teacher_outputs[tap]), expected)


def test_cc_averages_the_products_of_consecutive_differences():
    teacher = torch.zeros(3, 2)
    student = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]])  # |d|: (1,0), (1,1), (0,1)
    # d0.d1 = 1 and d1.d2 = 1 over 2 pairs of 2 elements
    assert _value("cc", student, teacher) == pytest.approx(0.5)


# ------------------------------------------------------------------------------ --loss specs
@pytest.mark.parametrize("name", LOSSES)
def test_spec_defaults_are_filled_in(name):
    kind = get_loss(name)
    spec = parse_loss_spec(name, LAYER_TAPS)
    assert spec == LossSpec(name, kind.default_weight, _default_taps(name))


def test_spec_with_weight_and_taps():
    assert parse_loss_spec("at=500@layer3,layer4", LAYER_TAPS) == LossSpec("at", 500.0, ("layer3", "layer4"))
    assert parse_loss_spec(" SP=2@features ", LAYER_TAPS) == LossSpec("sp", 2.0, (FEATURES,))
    assert str(parse_loss_spec("at=500@layer3,layer4", LAYER_TAPS)) == "at=500@layer3,layer4"


@pytest.mark.parametrize("text, message", [
    ("at=abc", "not a number"),
    ("at=-1", ">= 0"),
    ("at=inf", ">= 0"),
    ("at=nan", ">= 0"),
    ("nosuchloss", "unknown distillation loss"),
    ("at@layer9", "unknown tap"),
    ("sp@layer1,bogus", "unknown tap"),
])
def test_bad_specs_are_user_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_loss_spec(text, LAYER_TAPS)
