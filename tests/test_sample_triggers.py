"""sample_triggers/: every file loads as a trigger, and the drawn PNGs are what make_samples.py draws."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder_clean.triggers import load_trigger

FOLDER = Path(__file__).resolve().parents[1] / "sample_triggers"


@pytest.fixture(scope="module")
def make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", FOLDER / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(p.name for p in FOLDER.glob("*.p[ne][gz]")))
def test_every_sample_loads_as_a_trigger(path):
    size = 224 if "224px" in path else 32
    trigger = load_trigger(str(FOLDER / path), size)
    assert trigger.describe()["mask_l1"] > 0


def test_the_drawn_samples_match_their_functions(make_samples):
    for name, draw in make_samples.DRAWN_SAMPLES.items():
        assert np.array_equal(np.asarray(Image.open(FOLDER / name)), draw())


def test_the_plus_masks_only_the_plus_and_the_logo_is_coloured(make_samples):
    plus, logo = make_samples.plus_sign(), make_samples.colour_logo()
    assert (plus[..., 3] > 0).sum() == 9 * 3 * 2 - 3 * 3
    assert plus[0, 0, 3] == 0 and plus[4, 4, 3] == 255
    assert len({tuple(p) for p in logo[..., :3].reshape(-1, 3)}) >= 4
    trigger = load_trigger(str(FOLDER / "plus_9x9.png@2,12"), 32)
    assert trigger.describe()["bbox"] == [2, 12, 10, 20]
