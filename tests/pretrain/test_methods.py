"""Each pre-training method: a step trains, and MoCo's queue and the momentum updates do what the papers say."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encoder_clean.data.augment import augmentation
from encoder_clean.encoders import create_encoder
from encoder_clean.errors import UserError
from encoder_clean.pretrain import PretrainLoopConfig, Schedule, get_method, list_methods, pretrain_encoder, two_views
from tests.conftest import TINY_ARCH

CPU = torch.device("cpu")
METHODS = ("simclr", "mocov2", "byol")


def _encoder():
    torch.manual_seed(0)
    return create_encoder(TINY_ARCH).add_head().train()


def _build(name, encoder, *options, total_steps=10, images=1000, batch_size=8):
    method = get_method(name)
    schedule = Schedule(total_steps, batch_size, images, torch.Generator().manual_seed(0))
    return method.build(encoder, method.settings(list(options)), schedule)


def _views(n=8, seed=0):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return two_views(images, 32, torch.Generator().manual_seed(seed), augmentation("strong"))


def test_every_method_is_registered():
    assert set(METHODS) <= set(list_methods())


@pytest.mark.parametrize("name", METHODS)
def test_one_step_changes_the_weights_and_the_loss_is_finite(name, tiny_data):
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = PretrainLoopConfig(epochs=1, batch_size=16, method=name)
    stats = pretrain_encoder(encoder, tiny_data.train.images[:16], config, seed=0, device=CPU)
    assert stats["steps"] == 1 and stats["method"] == name
    assert math.isfinite(stats["final_loss"])
    moved = [k for k, v in encoder.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("head.") for k in moved) and any(not k.startswith("head.") for k in moved)


def test_published_defaults():
    assert get_method("simclr").defaults.temperature == 0.5
    moco = get_method("mocov2").defaults
    assert (moco.temperature, moco.queue_size, moco.momentum) == (0.2, 4096, 0.99)
    assert get_method("byol").defaults.tau == 0.996


def test_moco_scores_against_the_queue_before_this_step_then_enqueues_the_keys():
    encoder = _encoder()
    moco = _build("mocov2", encoder)
    views = _views()
    queue = moco.queue.clone()
    loss = moco.loss(encoder, views, CPU)
    q = F.normalize(encoder.project(encoder.features(views[:8])), dim=1)
    with torch.no_grad():
        k = F.normalize(moco.key_encoder.project(moco.key_encoder.features(views[8:])), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], dim=1) / 0.2
    assert torch.allclose(loss, F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)), atol=1e-5)
    assert torch.allclose(moco.queue[:8], k, atol=1e-6) and torch.equal(moco.queue[8:], queue[8:])
    assert int(moco.pointer) == 8


def test_moco_queue_is_a_ring_and_keeps_the_published_share_of_a_small_set():
    moco = _build("mocov2", _encoder(), "queue_size=5", images=100)
    assert moco.queue.shape == (5, 128)
    first, second = torch.ones(3, 128), torch.full((3, 128), 2.0)
    moco.enqueue(first)
    moco.enqueue(second)
    assert moco.queue[:, 0].tolist() == [2, 1, 1, 2, 2] and int(moco.pointer) == 1
    sizes = {images: _build("mocov2", _encoder(), images=images, batch_size=8).queue.shape[0]
             for images in (50_000, 100_000, 5_000, 500, 40)}
    assert sizes == {50_000: 4096, 100_000: 4096, 5_000: 410, 500: 41, 40: 8}  # 8%, at least a batch


@pytest.mark.parametrize("name, copy", [("mocov2", "key_encoder"), ("byol", "target")])
def test_the_momentum_copy_receives_no_gradient(name, copy):
    encoder = _encoder()
    objective = _build(name, encoder)
    objective.loss(encoder, _views(), CPU).backward()
    kept = getattr(objective, copy)
    assert all(not p.requires_grad and p.grad is None for p in kept.parameters())
    assert all(p.grad is not None for p in encoder.parameters())
    trained = [p for p in objective.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trained) and (name != "byol" or trained)  # BYOL's predictor trains


def _shift_online(encoder, amount=1.0):
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(amount)


def test_moco_momentum_update_is_exactly_m_key_plus_1_minus_m_query():
    encoder = _encoder()
    moco = _build("mocov2", encoder, "momentum=0.9")
    old = [p.clone() for p in moco.key_encoder.parameters()]
    _shift_online(encoder)  # the key encoder started as a copy: the query is now key + 1
    moco.update(encoder)
    for before, after, online in zip(old, moco.key_encoder.parameters(), encoder.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * online, rtol=0, atol=1e-6)
        assert torch.allclose(after - before, torch.full_like(before, 0.1), rtol=0, atol=1e-5)


def test_byol_tau_rises_from_its_base_to_1_on_a_cosine():
    byol = _build("byol", _encoder(), total_steps=10)
    assert float(byol.tau(0)) == pytest.approx(0.996, abs=1e-12)
    assert float(byol.tau(5)) == pytest.approx(0.998, abs=1e-12)
    assert float(byol.tau(10)) == pytest.approx(1.0, abs=1e-12)
    assert float(byol.tau(2)) == pytest.approx(1 - 0.004 * (math.cos(math.pi * 0.2) + 1) / 2, abs=1e-12)


def test_byol_target_update_uses_the_scheduled_tau_of_each_step():
    encoder = _encoder()
    byol = _build("byol", encoder, total_steps=4)
    for k in range(3):
        old = [p.clone() for p in byol.target.parameters()]
        _shift_online(encoder)
        byol.update(encoder)
        tau = 1 - 0.004 * (math.cos(math.pi * k / 4) + 1) / 2
        for before, after, online in zip(old, byol.target.parameters(), encoder.parameters()):
            assert torch.allclose(after, tau * before + (1 - tau) * online, rtol=0, atol=1e-6)
        assert int(byol.steps) == k + 1


def test_byol_loss_is_2_minus_2_cos_summed_over_both_orders():
    encoder = _encoder()
    byol = _build("byol", encoder)
    views = _views()
    loss = byol.loss(encoder, views, CPU)
    p = F.normalize(byol.predictor(encoder.project(encoder.features(views))), dim=1)
    with torch.no_grad():
        t = F.normalize(byol.target.project(byol.target.features(views)), dim=1)
    expected = ((2 - 2 * (p[:8] * t[8:]).sum(1)) + (2 - 2 * (p[8:] * t[:8]).sum(1))).mean()
    assert torch.allclose(loss, expected, atol=1e-5)


@pytest.mark.parametrize("name, option", [("mocov2", "momentum=1.5"), ("mocov2", "queue_size=0"),
                                          ("mocov2", "temperature=0"), ("byol", "tau=-0.1"),
                                          ("simclr", "temperature=-1"), ("byol", "temperature=0.5")])
def test_bad_settings_are_refused(name, option):
    with pytest.raises(UserError):
        _build(name, _encoder(), option)


def test_an_unknown_method_is_refused():
    with pytest.raises(UserError, match="known: byol, mocov2, simclr"):
        get_method("swav")


def test_symmetric_moco_adds_the_second_views_queries_and_enqueues_both_views_keys():
    encoder = _encoder()
    moco = _build("mocov2", encoder, "symmetric=true")
    views = _views()
    queue = moco.queue.clone()
    loss = moco.loss(encoder, views, CPU)
    q = F.normalize(encoder.project(encoder.features(views)), dim=1)
    with torch.no_grad():
        k = F.normalize(moco.key_encoder.project(moco.key_encoder.features(views)), dim=1)
    pairs = [(q[:8], k[8:]), (q[8:], k[:8])]
    expected = sum(F.cross_entropy(torch.cat([(a * b).sum(1, keepdim=True), a @ queue.t()], dim=1) / 0.2,
                                   torch.zeros(8, dtype=torch.long)) for a, b in pairs)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(moco.queue[:16], torch.cat([k[8:], k[:8]]), atol=1e-5) and int(moco.pointer) == 16


def test_byol_reports_the_collapse_diagnostic(tiny_data):
    from encoder_clean.pretrain.byol import projection_std

    spread = torch.randn(4096, 128, generator=torch.Generator().manual_seed(0))
    assert float(projection_std(spread)) == pytest.approx(1.0, abs=0.02)
    assert float(projection_std(torch.ones(16, 128) + 1e-3 * spread[:16])) < 0.01  # collapsed: one point
    stats = pretrain_encoder(_encoder(), tiny_data.train.images[:16],
                             PretrainLoopConfig(epochs=1, batch_size=16, method="byol"), seed=0, device=CPU)
    assert 0 < stats["final_projection_std"] <= 1.5
    simclr = pretrain_encoder(_encoder(), tiny_data.train.images[:16],
                              PretrainLoopConfig(epochs=1, batch_size=16, method="simclr"), seed=0, device=CPU)
    assert "final_projection_std" not in simclr


def test_byol_predictor_lr_puts_the_predictor_in_its_own_group_at_that_multiple():
    from encoder_clean.pretrain.core import parameter_groups

    encoder = _encoder()
    plain = _build("byol", encoder)
    assert len(parameter_groups(encoder, plain, 0.01)) == 1  # the published setting: one group, as before
    byol = _build("byol", encoder, "predictor_lr=10")
    groups = parameter_groups(encoder, byol, 0.01)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in byol.predictor.parameters()}
    assert not {id(p) for p in groups[0]["params"]} & {id(p) for p in groups[1]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(encoder.parameters())) + len(list(byol.predictor.parameters()))


def test_byol_predictor_lr_moves_the_predictor_that_many_times_further_in_an_adamw_step():
    from encoder_clean.pretrain.core import parameter_groups

    def one_step(scale):
        encoder = _encoder()
        torch.manual_seed(1)
        byol = _build("byol", encoder, f"predictor_lr={scale}")
        before = [p.detach().clone() for p in byol.predictor.parameters()]
        encoder_before = [p.detach().clone() for p in encoder.parameters()]
        optimizer = torch.optim.AdamW(parameter_groups(encoder, byol, 1e-3), lr=1e-3, weight_decay=0)
        byol.loss(encoder, _views(), CPU).backward()
        optimizer.step()
        moved = lambda now, then: sum(float((a.detach() - b).abs().sum()) for a, b in zip(now, then))
        return moved(byol.predictor.parameters(), before), moved(encoder.parameters(), encoder_before)

    (predictor_1, encoder_1), (predictor_10, encoder_10) = one_step(1), one_step(10)
    assert predictor_10 == pytest.approx(10 * predictor_1, rel=1e-3)  # Adam's first step is lr times the sign
    assert encoder_10 == pytest.approx(encoder_1, rel=1e-6)


def test_byol_refuses_a_predictor_lr_that_is_not_positive():
    with pytest.raises(UserError, match="predictor_lr"):
        _build("byol", _encoder(), "predictor_lr=0")


def test_direct_predictor_is_the_eigen_form_of_the_running_correlation():
    from encoder_clean.pretrain.byol import DirectPredictor

    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g) * torch.arange(1.0, 7.0)
    predictor = DirectPredictor(6, rho=0.3, eps=0.1).train()
    predictor(first)
    assert torch.allclose(predictor.correlation, first.T @ first / 32, atol=1e-5)  # the first batch, not zeros
    predictor(second)
    correlation = 0.3 * (first.T @ first / 32) + 0.7 * (second.T @ second / 32)
    assert torch.allclose(predictor.correlation, correlation, atol=1e-5)
    values, vectors = torch.linalg.eigh(correlation)
    shares = values.sqrt() / values.sqrt().max() + 0.1
    assert torch.allclose(predictor.weight, vectors @ torch.diag(shares) @ vectors.T, atol=1e-5)
    z = torch.randn(4, 6, generator=g, requires_grad=True)
    frozen = predictor.eval()(z)  # in eval mode it applies the weight and leaves it
    assert torch.allclose(frozen, z @ predictor.weight) and torch.allclose(predictor.correlation, correlation, atol=1e-5)
    frozen.sum().backward()  # gradients reach the projections through it
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert not list(predictor.parameters())


def test_byol_with_direct_predictor_trains_the_encoder_and_nothing_else():
    from encoder_clean.pretrain.core import parameter_groups

    encoder = _encoder()
    byol = _build("byol", encoder, "predictor=direct", "predictor_lr=10")
    groups = parameter_groups(encoder, byol, 0.01)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(encoder.parameters()))
    loss = byol.loss(encoder, _views(), CPU)
    loss.backward()
    assert math.isfinite(loss.item()) and all(p.grad is not None for p in encoder.head.parameters())
    assert not torch.equal(byol.predictor.weight, torch.eye(byol.predictor.weight.shape[0]))


@pytest.mark.parametrize("option", ["predictor=linear", "direct_rho=1", "direct_eps=-0.1"])
def test_byol_refuses_a_bad_direct_predictor_setting(option):
    with pytest.raises(UserError, match=option.split("=")[0]):
        _build("byol", _encoder(), option)
