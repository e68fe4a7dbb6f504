"""Built-in datasets generated in memory from a seed: 32x32 RGB, 10 classes, train and test splits.

Two families, so an encoder can be pre-trained on one and evaluated downstream on the other (the papers'
cross-dataset setting):
- `shapes`: ten geometric shapes (circle, square, triangle, plus, ring, star, crescent, L, two bars, X)
  with random colours, position, scale, small rotation, textured backgrounds and clutter blobs;
- `glyphs`: seven-segment digits 0-9 with random stroke width, slant, colours and partly visible
  neighbouring digits, in the manner of house-number crops.

Colour, position and background vary far more than the class does, so raw (random) features are poor
and self-supervised pre-training with colour and crop augmentations pays off. Every image is drawn with
batched tensor operations from signed distance functions; nothing loops over images.

Spec: `builtin[:FAMILY][?train=N&test=N&seed=S]` (defaults: shapes, 10000, 2000, 0).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from encoder_clean.data.augment import to_uint8
from encoder_clean.data.dataset import Dataset, Split
from encoder_clean.data.formats import register_format, reject_unknown, take_int
from encoder_clean.runtime import NULL_PROGRESS, Progress
from encoder_clean.errors import UserError

IMAGE_SIZE = 32
NUM_CLASSES = 10
DEFAULT_TRAIN = 10_000
DEFAULT_TEST = 2_000
CHUNK = 2048

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- distance helpers
def _box(u: Tensor, v: Tensor, half_w: float, half_h: float) -> Tensor:
    return torch.maximum(u.abs() - half_w, v.abs() - half_h)


def _capsule(u: Tensor, v: Tensor, a: tuple[float, float], b: tuple[float, float], radius: Tensor) -> Tensor:
    """Distance to the segment a-b minus the radius (a stroke of width 2*radius)."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = (((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv)).clamp(0, 1)
    return torch.hypot(u - a[0] - t * du, v - a[1] - t * dv) - radius


def _plus(u: Tensor, v: Tensor, arm: float, width: float) -> Tensor:
    return torch.minimum(_box(u, v, arm, width), _box(u, v, width, arm))


# Each shape: local coordinates (u right, v down, about [-1, 1]) -> signed distance (negative inside).
SHAPES: tuple[tuple[str, Callable[[Tensor, Tensor], Tensor]], ...] = (
    ("circle", lambda u, v: torch.hypot(u, v) - 0.85),
    ("square", lambda u, v: _box(u, v, 0.72, 0.72)),
    ("triangle", lambda u, v: torch.maximum(u.abs() * 0.87 - v * 0.5 - 0.4, v - 0.75)),
    ("plus", lambda u, v: _plus(u, v, 0.95, 0.28)),
    ("ring", lambda u, v: (torch.hypot(u, v) - 0.68).abs() - 0.2),
    ("star", lambda u, v: torch.hypot(u, v) - (0.58 + 0.32 * torch.cos(5 * torch.atan2(v, u)))),
    ("crescent", lambda u, v: torch.maximum(torch.hypot(u, v) - 0.9, 0.72 - torch.hypot(u - 0.5, v))),
    ("L", lambda u, v: torch.minimum(_box(u + 0.5, v, 0.25, 0.9), _box(u, v - 0.65, 0.75, 0.25))),
    ("two-bars", lambda u, v: torch.minimum(_box(u, v - 0.48, 0.9, 0.2), _box(u, v + 0.48, 0.9, 0.2))),
    ("x-cross", lambda u, v: _plus((u + v) * 0.7071, (u - v) * 0.7071, 0.95, 0.24)),
)

# Seven-segment layout on u in [-0.5, 0.5], v in [-1, 1]: a b c d e f g.
SEGMENTS = (
    ((-0.45, -0.9), (0.45, -0.9)), ((0.5, -0.85), (0.5, -0.05)), ((0.5, 0.05), (0.5, 0.85)),
    ((-0.45, 0.9), (0.45, 0.9)), ((-0.5, 0.05), (-0.5, 0.85)), ((-0.5, -0.85), (-0.5, -0.05)),
    ((-0.45, 0.0), (0.45, 0.0)),
)
DIGIT_SEGMENTS = ("abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg")
SEGMENT_TABLE = torch.tensor([[s in digit for s in "abcdefg"] for digit in DIGIT_SEGMENTS])


# ----------------------------------------------------------------------------- common pieces
def _grid(n: int) -> tuple[Tensor, Tensor]:
    coords = (torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5) / IMAGE_SIZE * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return x.expand(n, -1, -1), y.expand(n, -1, -1)


def _rand(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _luminance(rgb: Tensor) -> Tensor:
    return rgb @ torch.tensor([0.299, 0.587, 0.114])


def _colours(n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Background colour pair and a foreground colour that contrasts with the background."""
    bg_a, bg_b = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    bg_b = bg_a + (bg_b - bg_a) * 0.5  # a gentle gradient, not a second object
    fg = torch.rand(n, 3, generator=g)
    low_contrast = (_luminance(fg) - _luminance((bg_a + bg_b) / 2)).abs() < 0.3
    fg[low_contrast] = 1 - fg[low_contrast]
    still_low = (_luminance(fg) - _luminance((bg_a + bg_b) / 2)).abs() < 0.3
    brighter = _luminance(bg_a[still_low]) < 0.5
    fg[still_low] = torch.where(brighter.unsqueeze(1), torch.ones(1, 3), torch.zeros(1, 3)) * 0.85 + 0.075
    return bg_a, bg_b, fg


def _background(x: Tensor, y: Tensor, bg_a: Tensor, bg_b: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    angle = _rand(n, 0, 2 * math.pi, g).view(n, 1, 1)
    ramp = ((x * torch.cos(angle) + y * torch.sin(angle)) * 0.5 + 0.5).unsqueeze(1)
    image = bg_a.view(n, 3, 1, 1) + (bg_b - bg_a).view(n, 3, 1, 1) * ramp
    # A low-frequency texture of random orientation and frequency.
    freq = _rand(n, 2, 7, g).view(n, 1, 1)
    t_angle = _rand(n, 0, math.pi, g).view(n, 1, 1)
    phase = _rand(n, 0, 2 * math.pi, g).view(n, 1, 1)
    amplitude = _rand(n, 0.0, 0.12, g).view(n, 1, 1, 1)
    wave = torch.sin(freq * (x * torch.cos(t_angle) + y * torch.sin(t_angle)) * math.pi + phase)
    return image + amplitude * wave.unsqueeze(1)


def _blobs(image: Tensor, x: Tensor, y: Tensor, g: torch.Generator, count: int = 2) -> Tensor:
    """Paint small clutter discs of random colour at random places."""
    n = x.shape[0]
    for _ in range(count):
        cx, cy = _rand(n, -0.95, 0.95, g).view(n, 1, 1), _rand(n, -0.95, 0.95, g).view(n, 1, 1)
        radius = _rand(n, 0.06, 0.16, g).view(n, 1, 1)
        present = (torch.rand(n, generator=g) < 0.7).float().view(n, 1, 1, 1)
        alpha = _soft_inside(torch.hypot(x - cx, y - cy) - radius, 1.0).unsqueeze(1) * present
        colour = torch.rand(n, 3, generator=g).view(n, 3, 1, 1)
        image = image * (1 - alpha) + colour * alpha
    return image


def _soft_inside(distance: Tensor, scale: Tensor | float) -> Tensor:
    """Anti-aliased coverage from a signed distance in local units (about one pixel wide)."""
    pixels_per_unit = IMAGE_SIZE / 2 * scale
    return torch.sigmoid(-distance * pixels_per_unit * 1.5)


def _finish(image: Tensor, g: torch.Generator) -> Tensor:
    noise = torch.randn(image.shape, generator=g) * 0.03
    return to_uint8(image + noise)


def _local(x: Tensor, y: Tensor, cx: Tensor, cy: Tensor, scale: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    cx, cy, scale, angle = (t.view(n, 1, 1) for t in (cx, cy, scale, angle))
    dx, dy = x - cx, y - cy
    cos, sin = torch.cos(angle), torch.sin(angle)
    return (dx * cos + dy * sin) / scale, (-dx * sin + dy * cos) / scale


# ----------------------------------------------------------------------------- families
def _draw_shapes(labels: Tensor, g: torch.Generator) -> Tensor:
    n = len(labels)
    x, y = _grid(n)
    bg_a, bg_b, fg = _colours(n, g)
    image = _blobs(_background(x, y, bg_a, bg_b, g), x, y, g)
    scale = _rand(n, 0.38, 0.7, g)
    u, v = _local(x, y, _rand(n, -0.3, 0.3, g), _rand(n, -0.3, 0.3, g), scale, _rand(n, -0.35, 0.35, g))
    distance = torch.empty_like(u)
    for index, (_, sdf) in enumerate(SHAPES):
        chosen = labels == index
        if chosen.any():
            distance[chosen] = sdf(u[chosen], v[chosen])
    alpha = _soft_inside(distance, scale.view(n, 1, 1)).unsqueeze(1)
    return _finish(image * (1 - alpha) + fg.view(n, 3, 1, 1) * alpha, g)


def _digit_distance(u: Tensor, v: Tensor, digits: Tensor, radius: Tensor) -> Tensor:
    n = len(digits)
    distance = torch.full_like(u, float("inf"))
    active = SEGMENT_TABLE[digits]  # (n, 7)
    for index, (a, b) in enumerate(SEGMENTS):
        segment = _capsule(u, v, a, b, radius.view(n, 1, 1))
        distance = torch.where(active[:, index].view(n, 1, 1), torch.minimum(distance, segment), distance)
    return distance


def _draw_glyphs(labels: Tensor, g: torch.Generator) -> Tensor:
    n = len(labels)
    x, y = _grid(n)
    bg_a, bg_b, fg = _colours(n, g)
    image = _blobs(_background(x, y, bg_a, bg_b, g), x, y, g, count=1)
    scale = _rand(n, 0.5, 0.8, g)
    u, v = _local(x, y, _rand(n, -0.2, 0.2, g), _rand(n, -0.15, 0.15, g), scale, _rand(n, -0.12, 0.12, g))
    u = u + v * _rand(n, -0.05, 0.3, g).view(n, 1, 1)  # italic slant
    radius = _rand(n, 0.1, 0.2, g)
    distance = _digit_distance(u, v, labels, radius)
    # Partly visible neighbours on either side, as in cropped house numbers.
    for side in (-1.0, 1.0):
        neighbours = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        present = torch.rand(n, generator=g) < 0.6
        gap = _rand(n, 1.35, 1.7, g).view(n, 1, 1)
        other = _digit_distance(u - side * gap, v, neighbours, radius)
        distance = torch.where(present.view(n, 1, 1), torch.minimum(distance, other), distance)
    alpha = _soft_inside(distance, scale.view(n, 1, 1)).unsqueeze(1)
    return _finish(image * (1 - alpha) + fg.view(n, 3, 1, 1) * alpha, g)


FAMILIES: dict[str, tuple[Callable[[Tensor, torch.Generator], Tensor], list[str], int]] = {
    # name: (drawer, class names, seed offset so families never share random streams)
    "shapes": (_draw_shapes, [name for name, _ in SHAPES], 101),
    "glyphs": (_draw_glyphs, [str(d) for d in range(10)], 202),
}


def generate_split(family: str, count: int, seed: int, split: str) -> Split:
    """`count` images of a family, balanced over classes, identical for the same arguments."""
    drawer, _, offset = FAMILIES[family]
    g = torch.Generator().manual_seed(seed * 1_000_003 + offset + (0 if split == "train" else 7919))
    labels = torch.arange(count) % NUM_CLASSES
    labels = labels[torch.randperm(count, generator=g)]
    chunks = [drawer(labels[start:start + CHUNK], g) for start in range(0, count, CHUNK)]
    return Split(torch.cat(chunks), labels)


def make_builtin(family: str = "shapes", train: int = DEFAULT_TRAIN, test: int = DEFAULT_TEST,
                 seed: int = 0) -> Dataset:
    if family not in FAMILIES:
        raise UserError(f"unknown built-in family {family!r}; known: {', '.join(FAMILIES)}")
    class_names = FAMILIES[family][1]
    return Dataset(f"builtin:{family}", generate_split(family, train, seed, "train"),
                   generate_split(family, test, seed, "test"), NUM_CLASSES, list(class_names))


def _load(argument: str, options: dict[str, str], progress: Progress = NULL_PROGRESS) -> Dataset:
    spec = f"builtin:{argument}" if argument else "builtin"
    family = argument.strip().lower() or "shapes"
    train = take_int(options, "train", DEFAULT_TRAIN, spec, low=NUM_CLASSES, high=1_000_000)
    test = take_int(options, "test", DEFAULT_TEST, spec, low=NUM_CLASSES, high=1_000_000)
    seed = take_int(options, "seed", 0, spec, low=0, high=2**31 - 1)
    reject_unknown(options, spec)
    return make_builtin(family, train, test, seed)


register_format("builtin", _load, "builtin[:shapes|glyphs][?train=N&test=N&seed=S]",
                "generated in memory: 32x32 RGB, 10 classes (default)", class_count=lambda argument, options: NUM_CLASSES)
