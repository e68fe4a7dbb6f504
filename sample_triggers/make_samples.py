"""Write the sample trigger files in this folder from the built-in trigger definitions.

Run: python sample_triggers/make_samples.py   (overwrites the files; the output is deterministic)
"""

from __future__ import annotations

from pathlib import Path

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


def main() -> None:
    for name, (spec, size) in SAMPLES.items():
        save_trigger_png(load_trigger(spec, size), HERE / name)
    for name, (spec, size) in NPZ_SAMPLES.items():
        save_trigger_npz(load_trigger(spec, size), HERE / name)


if __name__ == "__main__":
    main()
