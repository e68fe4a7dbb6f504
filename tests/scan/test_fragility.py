import math

import pytest
import torch

from encoder_clean.errors import UserError
from encoder_clean.scan.fragility import blur_kept, blurred, offset
from encoder_clean.scan.windows import WindowConfig, trigger_score, window_score


def window_mask(size: int = 32, top: int = 4, left: int = 8, side: int = 12) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[:, top:top + side, left:left + side] = 1
    return mask


def test_blur_averages_inside_the_window_only():
    mask = window_mask()
    solid = 0.8 * mask.expand(3, -1, -1)
    assert torch.allclose(blurred(solid, mask), solid, atol=1e-6)  # no darkened edge from the zeros outside
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checks = ((rows + cols) % 2).float().expand(3, -1, -1) * mask
    smooth = blurred(checks, mask)
    assert smooth[:, 6:14, 10:18].sub(0.5).abs().max() < 0.06  # a 1 px checkerboard averages out inside
    assert smooth[:, ~mask[0].bool()].abs().max() == 0  # and nothing leaks outside the window
    big = window_mask(224, 28, 56, 84)
    assert torch.allclose(blurred(0.3 * big.expand(3, -1, -1), big), 0.3 * big.expand(3, -1, -1), atol=1e-5)


def test_offset_counts_clean_deviations_of_the_mean():
    clean = torch.randn(512, 16, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 4, 16)
    assert offset(clean[:256], clean) < 0.2  # images among the clean ones
    shifted = clean + 5 * clean.std(0)  # every dimension five of its deviations out
    assert offset(shifted, clean) == pytest.approx(5.0, rel=0.02)


def test_blur_kept_is_the_share_of_the_collapse_left():
    assert blur_kept(-1.0, -5.0, -1.0) == pytest.approx(0.0)  # blurring undid it
    assert blur_kept(-5.0, -5.0, -1.0) == pytest.approx(1.0)
    assert blur_kept(-3.0, -5.0, -1.0) == pytest.approx(0.5)
    assert blur_kept(-0.5, -0.5, -1.0) == 1.0  # no collapse to undo


def test_a_deep_collapse_counts_only_with_a_trigger_like_pattern():
    config = WindowConfig(offset_limit=4.0, blur_limit=0.6)
    far = 3 * config.gap_limit  # the collapse figures alone: a backdoor three times over
    assert window_score(0.0, far, 1.0, config, offset=2.0, blur_kept=0.9) < 1.0  # smooth pattern, images stay near
    assert window_score(0.0, far, 1.0, config, offset=8.0, blur_kept=0.9) == pytest.approx(2.0)  # far out
    assert window_score(0.0, far, 1.0, config, offset=2.0, blur_kept=0.2) == pytest.approx(2.0)  # blur undoes it
    assert window_score(0.0, 0.5 * config.gap_limit, 1.0, config, offset=40.0, blur_kept=0.0) == pytest.approx(0.5)
    standout = 2 * config.anomaly_limit  # one window far beyond the others: no generic fragility, whatever the cues
    assert window_score(standout, far, 1.0, config, offset=0.0, blur_kept=1.0) == pytest.approx(2.0)
    assert trigger_score(2.0, 0.9, config) == pytest.approx(max(0.5, 0.1 / 0.4))
    assert window_score(0.0, far, 1.0, WindowConfig(offset_limit=0), offset=0.0, blur_kept=1.0) == pytest.approx(3.0)
    assert math.isinf(trigger_score(math.inf, 1.0, config))  # without the cues the collapse decides alone
    for bad in (dict(offset_limit=-1.0), dict(blur_limit=1.0)):
        with pytest.raises(UserError, match="offset_limit"):
            WindowConfig(**bad).check()
