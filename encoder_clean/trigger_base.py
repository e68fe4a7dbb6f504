"""What every trigger is: something that turns clean images (floats in [0, 1]) into triggered ones.

Kept apart from `encoder_clean.triggers` (the spec parser and the patch triggers) so that other kinds of
trigger, such as `encoder_clean.frequency_trigger`, subclass it without importing the parser that
registers them.
"""

from __future__ import annotations

import torch


class Trigger:
    """Base class: something that turns clean images into triggered ones."""

    spec: str

    def stamp(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec}
