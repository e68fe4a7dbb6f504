"""How often do two SimCLR views of one poisoned image separate the trigger from the object?

CorruptEncoder-style data poisoning relies on view pairs in which one view holds the trigger patch without
the target object and the other holds the object without the patch: only then must the encoder embed the
patch like the object. This samples the crop windows the way `encoder_clean.data.augment` does (area
share and log aspect ratio uniform, window inside the image) and counts such pairs for a layout: the
object a square of side `object_scale` against the left edge, a 10/32 patch in the free band opposite
(`--layout apart`, as `poison --attack bassl --option placement=apart`), or the patch anywhere on a full
image (`--layout random`, BASSL's placement, where the object is the whole image).

    python benchmarks/crop_views.py [--augment strong simclr] [--object-scale 0.45 0.6] [--pairs 200000]
        [--publish [--load TEXT]]

A view "holds" a box when it covers at least 80% of the patch or 60% of the object, and "lacks" it when
it covers under 20% of the patch or 15% of the object. With --publish the table goes to
benchmarks/RESULTS.md (section `crop-views`).
"""

from __future__ import annotations

import argparse
import math

import torch

from encoder_clean.data.augment import AUGMENTATIONS, augmentation
from results import add_publish_arguments, publish

PATCH = 10 / 32  # the default 10-pixel patch on 32-pixel images


def crop_windows(n: int, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """(n, 4) windows (x0, y0, width, height) in unit image coordinates."""
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g, dtype=torch.float64)
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=g, dtype=torch.float64)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    x0 = torch.rand(n, generator=g, dtype=torch.float64) * (1 - width)
    y0 = torch.rand(n, generator=g, dtype=torch.float64) * (1 - height)
    return torch.stack([x0, y0, width, height], dim=1)


def covered(windows: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each box (n, 4) that its window (n, 4) covers."""
    left = torch.maximum(windows[:, 0], boxes[:, 0])
    right = torch.minimum(windows[:, 0] + windows[:, 2], boxes[:, 0] + boxes[:, 2])
    top = torch.maximum(windows[:, 1], boxes[:, 1])
    bottom = torch.minimum(windows[:, 1] + windows[:, 3], boxes[:, 1] + boxes[:, 3])
    return (right - left).clamp(min=0) * (bottom - top).clamp(min=0) / (boxes[:, 2] * boxes[:, 3])


def layout_boxes(layout: str, object_scale: float, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(object boxes, patch boxes), each (n, 4)."""
    u = torch.rand(n, 3, generator=g, dtype=torch.float64)
    patch = torch.full((n,), PATCH, dtype=torch.float64)
    if layout == "random":
        objects = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).expand(n, 4)
        return objects, torch.stack([u[:, 0] * (1 - PATCH), u[:, 1] * (1 - PATCH), patch, patch], 1)
    side = torch.full((n,), object_scale, dtype=torch.float64)
    objects = torch.stack([torch.zeros(n, dtype=torch.float64), u[:, 0] * (1 - object_scale), side, side], 1)
    free = 1 - object_scale - PATCH
    return objects, torch.stack([object_scale + u[:, 1] * free, u[:, 2] * (1 - PATCH), patch, patch], 1)


def separated_pairs(augment: str, layout: str, object_scale: float, pairs: int, seed: int = 0) -> dict[str, float]:
    config = augmentation(augment)
    g = torch.Generator().manual_seed(seed)
    objects, patches = layout_boxes(layout, object_scale, pairs, g)
    first = crop_windows(pairs, config.crop_scale, config.crop_ratio, g)
    second = crop_windows(pairs, config.crop_scale, config.crop_ratio, g)
    shares = [(covered(view, objects), covered(view, patches)) for view in (first, second)]
    patch_only = [(p >= 0.8) & (o < 0.15) for o, p in shares]
    object_only = [(o >= 0.6) & (p < 0.2) for o, p in shares]
    separated = (patch_only[0] & object_only[1]) | (patch_only[1] & object_only[0])
    both_patch = (shares[0][1] >= 0.8) & (shares[1][1] >= 0.8)
    return {"patch_only_view": float(patch_only[0].double().mean()),
            "separated_pairs": float(separated.double().mean()),
            "both_views_hold_patch": float(both_patch.double().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augment", nargs="+", default=["strong", "simclr"], choices=list(AUGMENTATIONS.items()))  # the names, sorted
    parser.add_argument("--object-scale", nargs="+", type=float, default=[0.4, 0.45, 0.6])
    parser.add_argument("--pairs", type=int, default=200_000)
    add_publish_arguments(parser)
    args = parser.parse_args()
    print(f"{'augment':<8}{'layout':<8}{'object':>7}{'patch-only view %':>19}{'separated pairs %':>19}"
          f"{'both hold patch %':>19}")
    rows = []
    for augment in args.augment:
        for layout, scale in [("random", 1.0)] + [("apart", s) for s in args.object_scale]:
            figures = separated_pairs(augment, layout, scale, args.pairs)
            print(f"{augment:<8}{layout:<8}{scale:>7.2f}{100 * figures['patch_only_view']:>19.2f}"
                  f"{100 * figures['separated_pairs']:>19.2f}{100 * figures['both_views_hold_patch']:>19.2f}")
            rows.append({"augment": augment, "layout": layout, "object": round(scale, 2),
                         **{key: round(100 * value, 2) for key, value in figures.items()}})
    if args.publish:
        publish("crop-views", "How often two crop views separate the trigger patch from the object", rows,
                [("augment", "augment"), ("layout", "layout"), ("object", "object"),
                 ("patch_only_view", "patch-only view %"), ("separated_pairs", "separated pairs %"),
                 ("both_views_hold_patch", "both hold patch %")], load=args.load,
                notes=f"{args.pairs} sampled view pairs per row; a 10/32 patch; `object` is the object's side "
                      "(1.00: the whole image, with the patch anywhere).")


if __name__ == "__main__":
    main()
