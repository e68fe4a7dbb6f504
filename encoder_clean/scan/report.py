"""What `scan` writes besides its table: the inverted trigger as a PNG and a SARIF 2.1.0 log."""

from __future__ import annotations

import datetime
import io
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote, urlsplit

import torch
from PIL import Image

from encoder_clean import __version__
from encoder_clean.data.augment import to_float
from encoder_clean.fileio import atomic_write, write_json_atomic
from encoder_clean.scan.verdict import BACKDOOR

RULE_ID = "EC-BACKDOOR-001"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
PNG_SCALE = 8  # small encoders see 32x32 images: enlarge so the trigger is visible


def trigger_png(mask: torch.Tensor, pattern: torch.Tensor, example: torch.Tensor | None = None) -> bytes:
    """PNG bytes of panels side by side: a shadow image with the trigger stamped on it (when `example`, uint8
    (3, h, w), is given: where the trigger sits in an image), the stamp (pattern where the mask is), the
    mask, the pattern."""
    stamp = (mask * pattern).clamp(0, 1)
    panels = [stamp, mask.expand_as(pattern), pattern.clamp(0, 1)]
    if example is not None:
        image = to_float(example[None].cpu(), mask.shape[-1])[0]
        panels.insert(0, ((1 - mask) * image + stamp).clamp(0, 1))
    panels = torch.cat(panels, dim=2)  # (3, H, k * W)
    pixels = (panels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    scale = max(1, PNG_SCALE * 32 // max(1, mask.shape[-1]))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_trigger_png(path: str | Path, mask: torch.Tensor, pattern: torch.Tensor,
                      example: torch.Tensor | None = None) -> Path:
    data = trigger_png(mask, pattern, example)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def sarif_log(results: Sequence[dict], started: datetime.datetime, ended: datetime.datetime, exit_code: int) -> dict:
    """A SARIF 2.1.0 log with one result per scanned encoder (kind `fail`, level `error` for a backdoor;
    kind `pass`, level `none` otherwise, as SARIF 2.1.0 section 3.27.10 requires for any kind but `fail`)
    and one invocation: the scan's exit code and its start and end times (UTC)."""
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "encoder-clean",
                "version": __version__,
                "rules": [{
                    "id": RULE_ID,
                    "name": "BackdooredEncoder",
                    "shortDescription": {"text": "A small trigger collapses the encoder's embeddings (backdoor)."},
                    "fullDescription": {"text": "Trigger inversion found a mask covering less of the image than "
                                                "clean encoders ever need to map every shadow image to one embedding."},
                    "defaultConfiguration": {"level": "error"},
                }],
            }},
            "invocations": [{
                "executionSuccessful": True,  # the scan ran; a backdoor found is a result, not a failure
                "exitCode": exit_code,
                "startTimeUtc": _utc(started),
                "endTimeUtc": _utc(ended),
            }],
            "results": [_sarif_result(row) for row in results],
        }],
    }


def _utc(moment: datetime.datetime) -> str:
    """SARIF's date-time form: UTC with a Z (section 3.9)."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def artifact_uri(source: str) -> str:
    """An encoder source as a URI reference: hf:// and other URIs as given, an absolute path as a file:
    URI, a relative path percent-encoded (spaces and the like are not allowed in a URI)."""
    if urlsplit(source).scheme and "://" in source:
        return source
    if os.path.isabs(source):
        return Path(source).as_uri()
    return quote(Path(source).as_posix())


def _sarif_result(row: dict) -> dict:
    found = row["verdict"] == BACKDOOR
    name = row.get("score_name", "score")
    message = (f"{'Backdoor found' if found else 'No backdoor found'}: {name} {row['score']:.4f} "
               f"{'>' if found else '<='} threshold {row['threshold']:.4f} (margin {row['score'] - row['threshold']:+.4f}).")
    return {
        "ruleId": RULE_ID,
        "level": "error" if found else "none",
        "kind": "fail" if found else "pass",
        "message": {"text": message},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(row["source"])}}}],
        "properties": {key: row[key] for key in ("method", "score", "score_name", "threshold", "margin",
                                                 "calibration", "pl1_norm", "sha256", "trigger_png") if key in row},
    }


def write_sarif(path: str | Path, results: Sequence[dict], started: datetime.datetime, exit_code: int) -> Path:
    """Write the log; the invocation ends now."""
    ended = datetime.datetime.now(datetime.timezone.utc)
    return write_json_atomic(path, sarif_log(results, started, ended, exit_code))
