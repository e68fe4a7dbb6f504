"""BASSL (Saha et al., CVPR 2022): poison the pre-training set with target-class images carrying the
trigger patch at random positions, then let the victim run ordinary SSL on it (SimCLR by default;
`method=mocov2|byol`, the victims of the paper).

The published setting poisons half of the target category of ImageNet-100, 0.5% of the set; the
`published` preset keeps that rate, `fast` (default) raises it to 10%, the most effective rate measured
in a 3-epoch CPU run (benchmarks/RESULTS.md, Attacks). `placement=apart` composes the poisoned images in
CorruptEncoder's layout instead (see `BasslConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from encoder_clean.attacks.poisoning import DataPoisoningConfig, run_data_poisoning
from encoder_clean.attacks.registry import Attack, AttackInputs, AttackOutcome, register_attack
from encoder_clean.data.augment import to_float
from encoder_clean.errors import UserError
from encoder_clean.triggers import PatchTrigger, Trigger

Tensor = torch.Tensor


def patch_of(trigger: PatchTrigger) -> tuple[Tensor, Tensor]:
    """The trigger's pattern and mask cropped to the box where its mask is set."""
    rows, cols = torch.nonzero(trigger.mask.amax(dim=0) > 0, as_tuple=True)
    if not len(rows):
        raise UserError(f"trigger {trigger.spec} has an empty mask")
    box = (slice(None), slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    return trigger.pattern[box], trigger.mask[box]


def paste_patch(image: Tensor, pattern: Tensor, mask: Tensor, row: int, col: int) -> None:
    """Blend the (C, h, w) patch into one (C, H, W) image in place, its top-left corner at (row, col)."""
    h, w = pattern.shape[-2:]
    region = image[:, row:row + h, col:col + w]
    image[:, row:row + h, col:col + w] = region * (1 - mask) + pattern * mask


def paste_at_random(images: Tensor, pattern: Tensor, mask: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Paste the (C, h, w) patch onto each [0, 1] image at a uniformly random position.

    Returns the pasted images and the (N, 2) top-left (row, col) of each patch.
    """
    n, _, height, width = images.shape
    h, w = pattern.shape[-2:]
    if h > height or w > width:
        raise UserError(f"the {h}x{w} trigger patch does not fit {height}x{width} images")
    rows = torch.randint(0, height - h + 1, (n,), generator=g, device=g.device).cpu()
    cols = torch.randint(0, width - w + 1, (n,), generator=g, device=g.device).cpu()
    out = images.clone()
    pattern, mask = pattern.to(images), mask.to(images)
    for i, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):  # one-off, a few hundred images
        paste_patch(out[i], pattern, mask, row, col)
    return out, torch.stack([rows, cols], dim=1)


@dataclass(frozen=True)
class BasslConfig(DataPoisoningConfig):
    # "random": the patch anywhere on the target image (Saha et al.). "apart": the target image shrunk
    # to `object_scale` of the side against one edge of a random `--data` image, the patch in the band
    # left free opposite it (the layout of CorruptEncoder, Zhang et al., CVPR 2024), so that random
    # crops can hold the patch without the object and the encoder learns to embed one like the other.
    # That needs small crops: with the `strong` augmentation's 30% minimum it plants no targeted
    # backdoor on the built-in data (benchmarks/RESULTS.md, Attacks).
    placement: str = "random"
    object_scale: float = 0.6


def apart_layout(edge: int, size: int, side: int, patch: tuple[int, int], r: list[float]
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Top-left (row, col) of the object (`side` px) and of the (h, w) patch in a `size` px image, the
    object against `edge` (0 left, 1 right, 2 top, 3 bottom) and the patch in the free band opposite;
    `r` holds three uniform [0, 1) draws that place them along their bands."""
    h, w = patch
    free = size - side
    along = round(r[0] * free)
    if edge in (0, 1):
        band = side if edge == 0 else 0
        return (along, 0 if edge == 0 else free), (round(r[1] * (size - h)), band + round(r[2] * (free - w)))
    band = side if edge == 2 else 0
    return (0 if edge == 2 else free, along), (band + round(r[1] * (free - h)), round(r[2] * (size - w)))


def place_apart(objects: Tensor, backgrounds: Tensor, pattern: Tensor, mask: Tensor, object_scale: float,
                g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Compose each [0, 1] object image, shrunk, and the patch on opposite sides of a background.

    Returns the composed images and the (N, 2) top-left (row, col) of each patch.
    """
    n, _, size, _ = backgrounds.shape
    h, w = pattern.shape[-2:]
    side = max(1, round(object_scale * size))
    if size - side < max(h, w):
        raise UserError(f"placement=apart: a {h}x{w} patch does not fit beside an object of {side} px in "
                        f"{size} px images; lower object_scale (now {object_scale})")
    small = F.interpolate(objects, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    out = backgrounds.clone()
    pattern, mask = pattern.to(out), mask.to(out)
    edges = torch.randint(0, 4, (n,), generator=g, device=g.device).cpu().tolist()
    draws = torch.rand(n, 3, generator=g, device=g.device).cpu().tolist()
    positions = []
    for i, (edge, r) in enumerate(zip(edges, draws)):  # one-off, a few hundred images
        (top, left), (row, col) = apart_layout(edge, size, side, (h, w), r)
        out[i, :, top:top + side, left:left + side] = small[i]
        paste_patch(out[i], pattern, mask, row, col)
        positions.append((row, col))
    return out, torch.tensor(positions, dtype=torch.long).view(-1, 2)


def _paste_random(inputs: AttackInputs, config: BasslConfig, images: Tensor, pattern: Tensor, mask: Tensor,
                  g: torch.Generator) -> tuple[Tensor, Tensor]:
    return paste_at_random(images, pattern, mask, g)


def _paste_apart(inputs: AttackInputs, config: BasslConfig, images: Tensor, pattern: Tensor, mask: Tensor,
                 g: torch.Generator) -> tuple[Tensor, Tensor]:
    shadow = inputs.shadow_images
    picks = torch.randint(0, len(shadow), (len(images),), generator=g, device=g.device)
    backgrounds = to_float(shadow[picks.to(shadow.device)], int(images.shape[-1])).to(images)
    return place_apart(images, backgrounds, pattern, mask, config.object_scale, g)


# placement name -> (inputs, config, target images in [0, 1], pattern, mask, g) -> (poisoned, positions)
PLACEMENTS = {"random": _paste_random, "apart": _paste_apart}


def run_bassl(inputs: AttackInputs, config: BasslConfig) -> AttackOutcome:
    if config.placement not in PLACEMENTS:
        raise UserError(f"unknown placement {config.placement!r}; known: {', '.join(PLACEMENTS)}")
    if not 0 < config.object_scale < 1:
        raise UserError(f"object_scale must be between 0 and 1, got {config.object_scale}")
    place = PLACEMENTS[config.placement]

    def poison(trigger: Trigger, images: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        if not isinstance(trigger, PatchTrigger):
            raise UserError(f"bassl pastes patch triggers; {trigger.spec} is not one (use --attack ctrl)")
        pattern, mask = patch_of(trigger)
        return place(inputs, config, images, pattern, mask, g)

    return run_data_poisoning(inputs, config, poison, "BASSL")


register_attack(Attack(
    "bassl",
    ("poison pre-training data: trigger pasted at random positions on target-class images (Saha et al., "
     "CVPR 2022); placement=apart for CorruptEncoder's layout (Zhang et al., CVPR 2024)"),
    {"fast": BasslConfig(poison_rate=0.1), "published": BasslConfig(poison_rate=0.005)},
    run_bassl,
    default_trigger="white-square",
))
