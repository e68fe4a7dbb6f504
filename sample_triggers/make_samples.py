"""Write the sample trigger files in this folder from the built-in trigger definitions.

Run: python sample_triggers/make_samples.py   (overwrites the files; the output is deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from encoder_clean.triggers import load_trigger, save_trigger_npz, save_trigger_png

HERE = Path(__file__).resolve().parent

SAMPLES = {
    "white_square_10x10_32px.png": ("white-square", 32),
    "white_square_50x50_224px.png": ("white-square", 224),
    "checkerboard_8x8_32px.png": ("checkerboard:8", 32),
    "noise_patch_6x6_top_left_32px.png": ("noise-patch:6@1,1", 32),
    "blend_32px.png": ("blend", 32),
}
NPZ_SAMPLES = {"trigger_pt_white_21_10_ap_replace.npz": ("white-square", 32)}


def colour_logo(side: int = 7, seed: int = 2026) -> np.ndarray:
    """(side, side, 4) uint8: a fixed random mosaic of saturated colours, fully opaque. Unlike the
    built-ins it is neither black-and-white nor a solid fill."""
    palette = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.uint8)
    rgb = palette[np.random.default_rng(seed).integers(0, len(palette), (side, side))]
    return np.concatenate([rgb, np.full((side, side, 1), 255, np.uint8)], axis=2)


def plus_sign(side: int = 9, bar: int = 3) -> np.ndarray:
    """(side, side, 4) uint8: a red plus sign with bars `bar` px wide; only the plus is in the mask,
    so the trigger is not a filled square."""
    start = (side - bar) // 2
    alpha = np.zeros((side, side), np.uint8)
    alpha[start:start + bar, :] = alpha[:, start:start + bar] = 255
    rgb = np.broadcast_to(np.array([220, 20, 20], np.uint8), (side, side, 3))
    return np.concatenate([rgb, alpha[:, :, None]], axis=2)


# Small PNGs (placed with FILE.png@ROW,COL), drawn here rather than from a built-in.
DRAWN_SAMPLES = {"colour_logo_7x7.png": colour_logo, "plus_9x9.png": plus_sign}


def main() -> None:
    for name, (spec, size) in SAMPLES.items():
        save_trigger_png(load_trigger(spec, size), HERE / name)
    for name, (spec, size) in NPZ_SAMPLES.items():
        save_trigger_npz(load_trigger(spec, size), HERE / name)
    for name, draw in DRAWN_SAMPLES.items():
        Image.fromarray(draw(), "RGBA").save(HERE / name, format="PNG")


if __name__ == "__main__":
    main()
