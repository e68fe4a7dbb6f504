"""Trigger specs: built-ins, PNG with alpha, BadEncoder npz, placement and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from encoder_clean.errors import UserError
from encoder_clean.triggers import PatchTrigger, load_trigger, save_trigger_npz, save_trigger_png


def test_white_square_is_the_papers_trigger():
    trigger = load_trigger("white-square", 32)
    mask = trigger.mask[0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (21, 30, 21, 30)
    stamped = trigger.stamp(torch.zeros(2, 3, 32, 32))
    assert stamped[:, :, 21:31, 21:31].eq(1).all() and stamped.sum() == 2 * 3 * 100
    assert load_trigger("white-square", 224).describe()["bbox"] == [173, 173, 222, 222]


def test_size_and_position_options():
    trigger = load_trigger("checkerboard:4@2,3", 32)
    assert trigger.describe()["bbox"] == [2, 3, 5, 6]
    with pytest.raises(UserError, match="larger than"):
        load_trigger("white-square:40", 32)
    with pytest.raises(UserError, match="does not fit"):
        load_trigger("white-square:8@30,30", 32)
    with pytest.raises(UserError, match="unknown trigger"):
        load_trigger("rainbow", 32)


def test_blend_trigger_touches_every_pixel():
    trigger = load_trigger("blend", 32)
    x = torch.zeros(1, 3, 32, 32)
    assert (trigger.stamp(x) - x).abs().amax(dim=1).gt(0).float().mean() > 0.9


def test_png_round_trip_and_placement(tmp_path):
    original = load_trigger("noise-patch", 32)
    path = tmp_path / "t.png"
    save_trigger_png(original, path)
    again = load_trigger(str(path), 32)
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(again.stamp(x), original.stamp(x), atol=1 / 255)
    # A small patch PNG is placed bottom-right by default, or where @ROW,COL says.
    patch = np.zeros((4, 4, 4), dtype=np.uint8)
    patch[..., 0], patch[..., 3] = 255, 255
    Image.fromarray(patch, "RGBA").save(tmp_path / "p.png")
    assert load_trigger(str(tmp_path / "p.png"), 32).describe()["bbox"] == [27, 27, 30, 30]
    assert load_trigger(f"{tmp_path / 'p.png'}@0,0", 32).describe()["bbox"] == [0, 0, 3, 3]


def test_png_without_alpha_or_corrupt_is_refused(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="alpha"):
        load_trigger(str(tmp_path / "rgb.png"), 32)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="not a readable PNG"):
        load_trigger(str(tmp_path / "bad.png"), 32)
    with pytest.raises(UserError, match="not found"):
        load_trigger(str(tmp_path / "absent.png"), 32)


def test_badencoder_npz_stamps_like_the_release(tmp_path):
    # The release's format: uint8 images, stamped as x * tm + t with t in 0..255.
    t = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    tm = np.ones((1, 32, 32, 3), dtype=np.float64)
    t[0, 21:31, 21:31, :] = 255
    tm[0, 21:31, 21:31, :] = 0
    np.savez(tmp_path / "trigger_pt_white_21_10_ap_replace.npz", t=t, tm=tm)
    trigger = load_trigger(str(tmp_path / "trigger_pt_white_21_10_ap_replace.npz"), 32)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.float64)
    expected = images * tm[0] + t[0]
    ours = trigger.stamp(torch.from_numpy(images / 255).permute(0, 3, 1, 2).float())
    assert np.allclose(ours.permute(0, 2, 3, 1).numpy() * 255, expected, atol=1e-3)
    assert torch.equal(trigger.mask, load_trigger("white-square", 32).mask.expand(3, -1, -1))
    # And our writer produces the same format.
    save_trigger_npz(trigger, tmp_path / "again.npz")
    assert torch.allclose(load_trigger(str(tmp_path / "again.npz"), 32).stamp(ours), trigger.stamp(ours))


def test_bad_npz_is_refused(tmp_path):
    np.savez(tmp_path / "wrong.npz", a=np.zeros(3))
    with pytest.raises(UserError, match="needs arrays"):
        load_trigger(str(tmp_path / "wrong.npz"), 32)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable npz"):
        load_trigger(str(tmp_path / "junk.npz"), 32)


def test_patch_trigger_refuses_other_image_sizes():
    trigger = load_trigger("white-square", 32)
    assert isinstance(trigger, PatchTrigger)
    with pytest.raises(UserError, match="px"):
        trigger.stamp(torch.zeros(1, 3, 64, 64))
