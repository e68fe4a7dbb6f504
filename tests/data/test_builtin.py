"""Built-in data: deterministic, balanced, two distinct families, spec options."""

from __future__ import annotations

import pytest
import torch

from encoder_clean.data.builtin import make_builtin
from encoder_clean.data.specs import load_data
from encoder_clean.errors import UserError


def test_shapes_and_determinism():
    a = make_builtin("shapes", train=100, test=50, seed=3)
    b = make_builtin("shapes", train=100, test=50, seed=3)
    assert a.train.images.shape == (100, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert torch.bincount(a.train.labels, minlength=10).tolist() == [10] * 10
    c = make_builtin("shapes", train=100, test=50, seed=4)
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.train.images, a.test.images[:50].repeat(2, 1, 1, 1))


def test_families_differ_and_specs_parse():
    shapes = load_data("builtin?train=40&test=20")
    glyphs = load_data("builtin:glyphs?train=40&test=20")
    assert shapes.class_names[0] == "circle" and glyphs.class_names[0] == "0"
    assert not torch.equal(shapes.train.images, glyphs.train.images)
    assert len(shapes.train) == 40 and len(glyphs.test) == 20


@pytest.mark.parametrize("spec", ["builtin:nope", "builtin?train=abc", "builtin?train=5",
                                  "builtin?colour=red", "nosuchformat:x"])
def test_bad_specs(spec):
    with pytest.raises(UserError):
        load_data(spec)


def test_images_vary_in_colour_within_a_class():
    data = make_builtin("shapes", train=200, test=10)
    circles = data.train.images[data.train.labels == 0].float()
    assert circles.mean(dim=(2, 3)).std(dim=0).min() > 20  # mean colour varies a lot per image
