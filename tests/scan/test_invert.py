"""The scan methods on a tiny encoder: a planted trigger is found where it was planted, a clean encoder is
judged clean, and the settings follow DECREE's published ones."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from encoder_clean.data.builtin import make_builtin
from encoder_clean.encoders import create_encoder, list_archs
from encoder_clean.errors import UserError
from encoder_clean.pretrain import SimCLRConfig, pretrain_simclr
from encoder_clean.scan import BACKDOOR, CLEAN, list_methods, run_scan, scan_config
from encoder_clean.scan.decree import DecreeConfig, decree_invert
from encoder_clean.scan.invert import mean_pairwise_cosine
from encoder_clean.scan.verdict import get_method, margin_for, verdict_for
from encoder_clean.scan.windows import (WindowConfig, anomaly_index, identity_kept, scan_windows, start_bank,
                                        window_boxes, window_score)
from tests.scan.planted import LEFT, SIZE, TOP, PlantedBackdoor

CPU = torch.device("cpu")
QUICK_WINDOWS = WindowConfig(steps=25, batch_size=8)
QUICK_DECREE = DecreeConfig(max_epochs=40, batch_size=64)


@pytest.fixture(scope="module")
def shapes():
    return make_builtin("shapes", train=400, test=20, seed=0)


@pytest.fixture(scope="module")
def trained_tiny(shapes):
    """A tiny encoder after a short SimCLR run (a random one maps everything to nearly one point)."""
    torch.manual_seed(0)
    encoder = create_encoder("resnet10-cifar-w8").add_head()
    pretrain_simclr(encoder, shapes.train.images, SimCLRConfig(epochs=10, batch_size=64), seed=0, device=CPU)
    return encoder.eval()


@pytest.fixture(scope="module")
def windows(trained_tiny, shapes):
    images = shapes.train.images[:128]
    return (scan_windows(trained_tiny, images, QUICK_WINDOWS, device=CPU, seed=0),
            scan_windows(PlantedBackdoor(trained_tiny), images, QUICK_WINDOWS, device=CPU, seed=0))


def test_mean_pairwise_cosine_matches_the_pairs():
    features = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    unit = torch.nn.functional.normalize(features, dim=-1)
    expected = [(u @ u.T).sum().sub(7).div(42) for u in unit]
    assert torch.allclose(mean_pairwise_cosine(features), torch.stack(expected), atol=1e-6)


def test_windows_tile_the_image_edge_to_edge():
    boxes = window_boxes(32, WindowConfig(window=0.375, grid=5))
    assert len(boxes) == 25 and {b[2] for b in boxes} == {12}
    assert min(b[0] for b in boxes) == 0 and max(b[0] + b[2] for b in boxes) == 32
    assert window_boxes(224, WindowConfig())[-1] == (140, 140, 84)


def test_windows_of_a_patch_token_encoder_cover_whole_tokens():
    boxes = window_boxes(32, WindowConfig(window=0.375, grid=5), token_side=4)
    assert len(boxes) == 25 and {b[2] for b in boxes} == {12}
    assert all(top % 4 == 0 and left % 4 == 0 for top, left, _ in boxes)
    assert min(b[0] for b in boxes) == 0 and max(b[0] + b[2] for b in boxes) == 32
    assert {b[1] for b in window_boxes(224, WindowConfig(), token_side=16)} == {0, 32, 64, 112, 144}
    assert window_boxes(32, WindowConfig(), token_side=1) == window_boxes(32, WindowConfig())


def test_encoders_say_whether_they_have_patch_tokens():
    assert create_encoder("vit-p4-d4-w64").token_side == 4
    assert create_encoder("resnet10-cifar-w8").token_side is None


def test_large_inputs_take_the_lighter_schedule_and_small_ones_do_not():
    config = WindowConfig()
    assert config.effective(32) is config and config.effective(127) is config
    large = config.effective(224)
    assert (large.steps, large.start_images, large.eval_images, large.bf16) == (22, 12, 48, True)
    assert (large.window, large.grid, large.anomaly_limit, large.gap_limit) == (config.window, config.grid,
                                                                                 config.anomaly_limit, config.gap_limit)
    assert WindowConfig(large_from=100_000).effective(224).steps == 30  # the way to keep the full schedule
    assert WindowConfig(steps=3, large_effort=0.1).effective(224).steps == 2  # never below two of anything


def test_anomaly_index_is_robust_distance_below_the_median():
    values = torch.tensor([0.0, 0.1, -0.1, 0.2, -0.2, -3.0])
    # median -0.05, MAD 0.15: (−0.05 − (−3.0)) / (1.4826 · 0.15)
    assert anomaly_index(values, floor=0.01) == pytest.approx(2.95 / (1.4826 * 0.15), rel=1e-4)
    assert anomaly_index(torch.zeros(5), floor=0.5) == 0.0


def test_planted_window_stands_out_and_clean_does_not(windows):
    clean, planted = windows
    top, left, side = planted.boxes[planted.best]
    assert top <= TOP and TOP + SIZE <= top + side and left <= LEFT and LEFT + SIZE <= left + side
    config, threshold = get_method("encoder-clean").config, get_method("encoder-clean").threshold
    assert planted.anomaly_index > config.anomaly_limit > clean.anomaly_index
    assert window_score(planted.anomaly_index, planted.collapse_gap, planted.identity_kept, config, planted.offset,
                        planted.blur_kept) > threshold
    assert window_score(clean.anomaly_index, clean.collapse_gap, clean.identity_kept, config, clean.offset,
                        clean.blur_kept) < threshold
    assert planted.identity_kept < 0.42 < clean.identity_kept  # the planted trigger replaces the images' embeddings
    assert planted.mask.shape == (1, 32, 32) and planted.mask.sum() == side * side
    assert planted.pattern.min() >= 0 and planted.pattern.max() <= 1


def test_identity_kept_tells_a_shared_vector_added_from_embeddings_replaced():
    clean = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    shared = 50 * torch.randn(32, generator=torch.Generator().manual_seed(1))
    assert float(identity_kept(clean + shared, clean)) == pytest.approx(1.0, abs=1e-5)  # fragile: images show through
    replaced = shared + torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    assert abs(float(identity_kept(replaced, clean))) < 0.1  # a trigger: what is left is unrelated to the image
    partly = clean + 2 * torch.randn(64, 32, generator=torch.Generator().manual_seed(3))
    assert 0.3 < float(identity_kept(partly, clean)) < 0.6


def test_with_an_identity_limit_a_collapse_that_keeps_the_images_is_not_a_backdoor():
    config = WindowConfig(identity_limit=0.42)
    far = 3 * config.gap_limit  # the collapse figures alone would call it a backdoor three times over
    kept, erased = 0.5 * (1 + config.identity_limit), 0.5 * config.identity_limit
    assert window_score(0.0, far, kept, config) < 1.0 < window_score(0.0, far, erased, config)
    assert window_score(0.0, 0.5 * config.gap_limit, erased, config) == pytest.approx(0.5)
    assert window_score(0.0, far, kept, WindowConfig()) == pytest.approx(3.0)  # off by default: collapse alone
    with pytest.raises(UserError, match="identity_limit"):
        WindowConfig(identity_limit=1.5).check()


def test_start_bank_holds_solid_colours_checkerboards_and_noise():
    bank = start_bank(32, noise=4, g=torch.Generator().manual_seed(0))
    assert bank.shape == (15, 3, 32, 32)
    fills = (torch.tanh(bank) + 1) / 2
    solids = fills[:8].round()
    assert {tuple(int(v) for v in solid[:, 0, 0]) for solid in solids} == {(r, g, b) for r in (0, 1) for g in (0, 1)
                                                                          for b in (0, 1)}
    assert all(bool((solid == solid[:, :1, :1]).all()) for solid in solids)
    assert [int(fills[8 + i, 0, 0, :8].round().sum()) for i in range(3)] == [4, 4, 4]  # squares of 1, 2, 4 px
    assert bool((fills[10, 0, 0, :4] < 0.5).all()) and bool((fills[10, 0, 0, 4:8] > 0.5).all())
    big = (torch.tanh(start_bank(224, noise=0, g=torch.Generator().manual_seed(0))) + 1) / 2
    assert bool((big[8, 0, 0, :7] < 0.5).all()) and bool((big[8, 0, 0, 7:14] > 0.5).all())  # 1 px at 32 is 7 at 224


def test_a_narrow_backdoor_is_found_from_the_bank(trained_tiny, shapes):
    narrow = PlantedBackdoor(trained_tiny, opens_at=0.9, sharpness=60.0)
    found = scan_windows(narrow, shapes.train.images[:128], QUICK_WINDOWS, device=CPU, seed=0)
    top, left, side = found.boxes[found.best]
    assert top <= TOP and TOP + SIZE <= top + side and left <= LEFT and LEFT + SIZE <= left + side
    assert window_score(found.anomaly_index, found.collapse_gap, found.identity_kept, QUICK_WINDOWS, found.offset,
                        found.blur_kept) > 1.0


def test_decree_finds_the_planted_trigger(trained_tiny, shapes):
    found = decree_invert(PlantedBackdoor(trained_tiny), shapes.train.images[:128], QUICK_DECREE, device=CPU, seed=0)
    assert found.reached and found.similarity >= 0.99
    assert found.mask[0, TOP:TOP + SIZE, LEFT:LEFT + SIZE].sum() / found.mask.sum() > 0.5
    assert found.epochs < QUICK_DECREE.max_epochs  # the early stop ended it


def test_decree_published_settings():
    config = DecreeConfig()
    assert (config.lr, config.batch_size, config.similarity_target, config.lambda_init) == (0.5, 128, 0.99, 1e-3)
    assert [config.lr_at(e) for e in (0, 29, 30, 49, 50, 99)] == [0.5, 0.5, 0.1, 0.1, 0.05, 0.05]
    assert (config.lambda_factor, config.lambda_max, config.patience, config.early_stop) == (5.0, 1e5, 5, 10)


def test_run_scan_reports_how_sure_it_is(trained_tiny, shapes):
    outcome = run_scan(PlantedBackdoor(trained_tiny), shapes.train.images[:64], config=QUICK_WINDOWS, seed=0)
    row = outcome.row()
    assert row["verdict"] == BACKDOOR and row["margin"] == pytest.approx(row["score"] - row["threshold"], abs=1e-6)
    assert row["window"]["size"] == 12 and len(row["window_similarities"]) == 25
    trigger = max(row["offset"] / row["offset_limit"], (1 - row["blur_kept"]) / (1 - row["blur_limit"]))
    assert row["score"] == pytest.approx(max(row["anomaly_index"] / row["anomaly_limit"],
                                             min(row["collapse_gap"] / row["gap_limit"], trigger)), abs=1e-3)
    assert len(row["window_identity_kept"]) == 25 and row["identity_kept"] in row["window_identity_kept"]
    lenient = run_scan(trained_tiny, shapes.train.images[:64], config=QUICK_WINDOWS, threshold=1e9)
    assert lenient.verdict == CLEAN and lenient.margin < 0


def test_the_encoder_is_not_changed(trained_tiny, shapes):
    before = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    run_scan(trained_tiny, shapes.train.images[:16], config=WindowConfig(steps=2, batch_size=4), seed=0)
    run_scan(trained_tiny, shapes.train.images[:16], method="decree", config=DecreeConfig(max_epochs=1, batch_size=8))
    assert all(torch.equal(before[k], v) for k, v in trained_tiny.state_dict().items())


def test_verdict_and_margin():
    assert verdict_for(2.5, 2.0) == BACKDOOR and verdict_for(2.0, 2.0) == CLEAN
    assert margin_for(1.5, 2.0) == -0.5


@pytest.mark.parametrize("method,change", [("encoder-clean", {"steps": 0}), ("encoder-clean", {"window": 1.0}),
                                           ("encoder-clean", {"grid": 1}), ("encoder-clean", {"large_effort": 0}),
                                           ("encoder-clean", {"large_from": 0}), ("decree", {"batch_size": 1}),
                                           ("decree", {"similarity_target": 1.0}), ("decree", {"lambda_factor": 1.0})])
def test_bad_settings_are_user_errors(shapes, method, change):
    with pytest.raises(UserError):
        run_scan(create_encoder("resnet10-cifar-w8"), shapes.train.images[:8], method=method,
                 config=dataclasses.replace(get_method(method).config, **change))
    with pytest.raises(UserError, match="unknown scan method 'nope'; known: decree, encoder-clean"):
        scan_config("nope")


def test_scan_methods_are_registered():
    assert list(list_methods()) == ["decree", "encoder-clean"]
    assert get_method("decree").threshold == 0.9


@pytest.mark.parametrize("arch", [info.name for info in list_archs()])
def test_every_registered_architecture_can_be_scanned(arch, shapes):
    torch.manual_seed(0)
    encoder = create_encoder(arch).eval()
    # No start bank: its 15 starts per window were most of this test's time at 224 px (ResNet-50: 86 s of
    # CPU), and the bank does not depend on the architecture (tested on its own above).
    outcome = run_scan(encoder, shapes.train.images[:4],
                       config=WindowConfig(steps=1, batch_size=2, grid=2, start_bank=False))
    assert outcome.mask.shape == (1, encoder.image_size, encoder.image_size)
