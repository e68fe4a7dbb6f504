"""The CTRL frequency-domain trigger (Li et al., ICCV 2023, "An Embarrassingly Simple Backdoor Attack on
Self-supervised Learning").

The trigger lives in the chroma channels at high frequencies: the image (0-255 scale) is converted to
full-range YCbCr (JPEG, ITU-R BT.601), cut into non-overlapping `window` x `window` blocks from the top-left
corner, and in every block the orthonormal 2-D DCT-II of Cb and of Cr gets `magnitude` added at the
frequencies (window-1, window-1) and (window//2-1, window//2-1) ((31, 31) and (15, 15) for 32). Then the
inverse DCT, back to RGB, and clip to the valid range. Border pixels that do not fill a whole block are left
as they are. Luma is untouched, so the change is hard to see.

Spec: `ctrl[:MAGNITUDE[:WINDOW]]`, e.g. `ctrl`, `ctrl:50`, `ctrl:50:16` (defaults 100 and 32; the default
window shrinks to the image size on smaller images, a given one must fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from encoder_clean.errors import UserError
from encoder_clean.trigger_base import Trigger

Tensor = torch.Tensor

KIND = "ctrl"
DEFAULT_MAGNITUDE = 100.0
DEFAULT_WINDOW = 32
CTRL_USAGE = "ctrl[:MAGNITUDE[:WINDOW]]"
MIN_WINDOW = 4  # below this one of the two frequencies would be the DC term
CTRL_DESCRIPTION = ("CTRL frequency trigger: +MAG on two high DCT frequencies of the Cb/Cr chroma in every "
                    "WINDOW block; ctrl[:MAG[:WINDOW]] (defaults 100, 32)")

# Full-range YCbCr as in JPEG (ITU-R BT.601 luma weights), on the 0-255 scale with chroma centred on 128.
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_CHROMA_OFFSET = 128.0


@lru_cache(maxsize=None)
def _ycbcr_matrices() -> tuple[Tensor, Tensor]:
    """(forward, inverse) 3x3 float64 matrices; the inverse is exact rather than the rounded textbook one."""
    forward = torch.tensor([
        [_KR, _KG, _KB],
        [-0.5 * _KR / (1 - _KB), -0.5 * _KG / (1 - _KB), 0.5],
        [0.5, -0.5 * _KG / (1 - _KR), -0.5 * _KB / (1 - _KR)],
    ], dtype=torch.float64)
    return forward, torch.linalg.inv(forward)


def _mix(images: Tensor, matrix: Tensor) -> Tensor:
    """Apply a 3x3 colour matrix to the channel axis (-3) of (..., 3, H, W)."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(images.device, images.dtype), images)


def rgb_to_ycbcr(images: Tensor) -> Tensor:
    """(..., 3, H, W) RGB on the 0-255 scale -> full-range YCbCr (Cb, Cr centred on 128)."""
    out = _mix(images, _ycbcr_matrices()[0])
    offset = torch.tensor([0.0, _CHROMA_OFFSET, _CHROMA_OFFSET], device=images.device, dtype=images.dtype)
    return out + offset.view(3, 1, 1)


def ycbcr_to_rgb(images: Tensor) -> Tensor:
    """Inverse of `rgb_to_ycbcr` (no clipping)."""
    offset = torch.tensor([0.0, _CHROMA_OFFSET, _CHROMA_OFFSET], device=images.device, dtype=images.dtype)
    return _mix(images - offset.view(3, 1, 1), _ycbcr_matrices()[1])


@lru_cache(maxsize=None)
def _dct_matrix_cpu(n: int) -> Tensor:
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """Orthonormal DCT-II matrix D (n x n): the 1-D DCT of x is D @ x and D @ D.T is the identity.

    Built once per size (in float64) and only moved/cast per call.
    """
    return _dct_matrix_cpu(int(n)).to(device=device, dtype=dtype)


def frequency_positions(window: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two DCT positions that carry the trigger in a block of `window` pixels."""
    return (window - 1, window - 1), (window // 2 - 1, window // 2 - 1)


@dataclass
class FrequencyTrigger(Trigger):
    """CTRL: `magnitude` added to two high DCT frequencies of Cb and Cr in every `window` block."""

    spec: str
    magnitude: float = DEFAULT_MAGNITUDE
    window: int = DEFAULT_WINDOW
    image_size: int = 32

    def stamp(self, images: Tensor) -> Tensor:
        if images.ndim < 3 or images.shape[-3] != 3:
            raise UserError(f"trigger {self.spec} needs RGB images (N, 3, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise UserError(f"trigger {self.spec} needs float images in [0, 1], got {images.dtype}")
        height, width = int(images.shape[-2]), int(images.shape[-1])
        if (height, width) != (self.image_size, self.image_size):
            raise UserError(f"trigger {self.spec} is {self.image_size} px but images are {height}x{width} px")
        window = min(self.window, height, width)
        rows, cols = height // window, width // window
        if rows == 0 or cols == 0 or window < 1:
            return images.clone()
        # Work in at least float32 (half-precision DCTs lose the trigger); cast back at the end.
        work = torch.float64 if images.dtype == torch.float64 else torch.float32
        lead = images.shape[:-3]
        x = images.reshape(-1, 3, height, width).to(work)
        crop = x[..., :rows * window, :cols * window] * 255.0
        ycc = rgb_to_ycbcr(crop)
        chroma = ycc[:, 1:]  # (N, 2, rows*window, cols*window)
        n = chroma.shape[0]
        blocks = chroma.reshape(n, 2, rows, window, cols, window).permute(0, 1, 2, 4, 3, 5)
        d = dct_matrix(window, work, images.device)
        coeffs = d @ blocks @ d.T
        bump = torch.zeros(window, window, dtype=work, device=images.device)
        for u, v in frequency_positions(window):
            bump[u, v] += self.magnitude
        blocks = d.T @ (coeffs + bump) @ d
        chroma = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, 2, rows * window, cols * window)
        rgb = ycbcr_to_rgb(torch.cat([ycc[:, :1], chroma], dim=1)).clamp(0.0, 255.0) / 255.0
        out = x.clone()
        out[..., :rows * window, :cols * window] = rgb
        return out.clamp(0.0, 1.0).to(images.dtype).reshape(*lead, 3, height, width)

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "kind": KIND, "magnitude": self.magnitude, "window": self.window,
                "image_size": self.image_size}


def load_ctrl_trigger(spec: str, rest: str, image_size: int) -> FrequencyTrigger:
    """Loader for `ctrl[:MAGNITUDE[:WINDOW]]` (encoder_clean.triggers registers it under `ctrl`)."""
    usage = "expected ctrl[:MAGNITUDE[:WINDOW]], e.g. ctrl:100:32"
    parts = rest.split(":") if ":" in spec else []
    if len(parts) > 2:
        raise UserError(f"trigger {spec}: too many fields; {usage}")
    if any(not part.strip() for part in parts):
        raise UserError(f"trigger {spec}: empty field; {usage}")
    magnitude = DEFAULT_MAGNITUDE
    if parts:
        try:
            magnitude = float(parts[0])
        except ValueError:
            raise UserError(f"trigger {spec}: magnitude {parts[0]!r} is not a number; {usage}") from None
        if not math.isfinite(magnitude) or magnitude <= 0:
            raise UserError(f"trigger {spec}: magnitude must be a positive finite number, got {parts[0]!r}")
    if len(parts) == 2:
        text = parts[1].strip()
        if not text.isdigit():
            raise UserError(f"trigger {spec}: window {parts[1]!r} is not a positive integer; {usage}")
        window = int(text)
        if window < MIN_WINDOW or window > image_size:
            raise UserError(f"trigger {spec}: window must be between {MIN_WINDOW} and the image size "
                            f"{image_size}, got {window}")
    else:
        window = min(DEFAULT_WINDOW, image_size)
        if window < MIN_WINDOW:
            raise UserError(f"trigger {spec}: images of {image_size} px are too small (need {MIN_WINDOW} px)")
    return FrequencyTrigger(spec, magnitude, window, image_size)

