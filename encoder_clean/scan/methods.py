"""The registered scan methods: `encoder-clean` (the default, window collapse judged within the encoder)
and `decree` (DECREE's published inversion, judged by its PL1-norm against the published 0.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from encoder_clean.encoders.base import Encoder
from encoder_clean.runtime import Progress
from encoder_clean.scan.decree import DecreeConfig, decree_invert
from encoder_clean.scan.verdict import Finding, ScanMethod, register_method
from encoder_clean.scan.windows import WindowConfig, scan_windows, window_score


def _windows(encoder: Encoder, shadow: Tensor, config: WindowConfig, device: torch.device, seed: int,
             progress: Progress) -> Finding:
    found = scan_windows(encoder, shadow, config, device=device, seed=seed, progress=progress)
    top, left, side = found.boxes[found.best]
    score = window_score(found.anomaly_index, found.collapse_gap, found.identity_kept, config, found.offset,
                         found.blur_kept)
    return Finding(round(score, 4), found.mask, found.pattern, {
        "anomaly_index": round(found.anomaly_index, 4), "anomaly_limit": config.anomaly_limit,
        "collapse_gap": round(found.collapse_gap, 4), "gap_limit": config.gap_limit,
        "pl1_norm": round(float(found.mask.mean()), 6),
        "window": {"top": top, "left": left, "size": side},
        "similarity": found.similarities[found.best],
        "median_window_similarity": sorted(found.similarities)[len(found.similarities) // 2],
        "clean_similarity": round(found.baseline_similarity, 4),
        "identity_kept": round(found.identity_kept, 4), "identity_limit": config.identity_limit,
        "offset": round(found.offset, 4), "offset_limit": config.offset_limit,
        "blur_kept": round(found.blur_kept, 4), "blur_limit": config.blur_limit,
        "window_similarities": found.similarities, "window_identity_kept": found.identity})


def _decree(encoder: Encoder, shadow: Tensor, config: DecreeConfig, device: torch.device, seed: int,
            progress: Progress) -> Finding:
    found = decree_invert(encoder, shadow, config, device=device, seed=seed, progress=progress)
    return Finding(round(1.0 - found.pl1_norm, 6), found.mask, found.pattern, {
        "pl1_norm": round(found.pl1_norm, 6), "target_reached": found.reached,
        "similarity": round(found.similarity, 4), "clean_similarity": round(found.baseline_similarity, 4),
        "similarity_target": found.target, "epochs": found.epochs})


register_method(ScanMethod(
    "encoder-clean",
    "one optimised patch per window of a grid; backdoor when the best window collapses the embeddings far "
    "beyond the encoder's other windows (anomaly index > anomaly_limit) or far beyond the encoder's own "
    "clean agreement (collapse gap > gap_limit); score = max(anomaly index / anomaly_limit, collapse gap / "
    "gap_limit), the gap counted only when the window's pattern looks like a trigger: the stamped images land "
    "far outside the clean embeddings (offset > offset_limit) or a blurred pattern undoes most of the collapse "
    "(blur kept < blur_limit); score = max(anomaly index / anomaly_limit, min(collapse gap / gap_limit, "
    "max(offset / offset_limit, (1 - blur kept) / (1 - blur_limit)))); with -o identity_limit=L under 1 its "
    "stamp must also erase what the images show (score at most (1 - identity kept) / (1 - L))",
    "collapse score", WindowConfig(), threshold=1.0,
    calibration="anomaly_limit and gap_limit from the calibration part of benchmarks/scan_zoo.py's zoo",
    run=_windows))
register_method(ScanMethod(
    "decree",
    "DECREE's published inversion (CVPR 2023): smallest mask reaching 0.99 mean pairwise cosine; "
    "backdoor when its PL1-norm is below 0.1",
    "1 - PL1-norm", DecreeConfig(), threshold=0.9,
    calibration="DECREE's published PL1-norm threshold 0.1 (score = 1 - PL1-norm)",
    run=_decree))
