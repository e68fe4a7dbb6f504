"""A report folder for a before/after comparison: `report.json`, `summary.md`, `acc.png`, `asr.png`.

The plots are plain bar charts drawn with Pillow (already a dependency), so reports need no plotting
library. Every file is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from encoder_clean.fileio import atomic_write, write_json_atomic, write_text_atomic

COLOURS = ((76, 114, 176), (221, 132, 82), (85, 168, 104), (196, 78, 82), (129, 114, 179), (147, 120, 96))


def bar_chart_png(labels: Sequence[str], values: Sequence[float], title: str, *, maximum: float = 100.0,
                  width: int = 640, height: int = 400) -> bytes:
    """PNG bytes of a vertical bar chart of `values` (0..maximum) with value labels over the bars."""
    font = ImageFont.load_default()
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 50, width - 20, 40, height - 50
    draw.text((left, 12), title, fill="black", font=font)
    for tick in range(0, 101, 20):  # horizontal grid every 20% of the axis
        y = bottom - (bottom - top) * tick / 100
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((8, y - 6), f"{maximum * tick / 100:g}", fill="black", font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    slot = (right - left) / max(1, len(values))
    for index, (label, value) in enumerate(zip(labels, values)):
        x0 = left + index * slot + slot * 0.2
        x1 = left + (index + 1) * slot - slot * 0.2
        y = bottom - (bottom - top) * max(0.0, min(value, maximum)) / maximum
        draw.rectangle([x0, y, x1, bottom], fill=COLOURS[index % len(COLOURS)])
        draw.text((x0, y - 14), f"{value:.1f}", fill="black", font=font)
        draw.text((x0, bottom + 8), label[:int(slot / 6)], fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """`columns` are (key, header) pairs; floats print with two decimals."""
    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(columns))) + " |"]
    for row in rows:
        cells = [f"{row[key]:.2f}" if isinstance(row[key], float) else str(row[key]) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(folder: Path, payload: dict, rows: Sequence[dict], title: str, notes: Sequence[str] = ()) -> list[Path]:
    """Write the report files for `rows` (each with `name`, `acc`, `asr`, `asr_nontarget`)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [row["name"] for row in rows]
    written = [write_json_atomic(folder / "report.json", payload)]
    for key, label in (("acc", "clean accuracy (ACC, %)"), ("asr", "attack success rate (ASR, %)")):
        png = bar_chart_png(names, [float(row[key]) for row in rows], label)
        written.append(atomic_write(folder / f"{key}.png", lambda tmp, data=png: Path(tmp).write_bytes(data)))
    table = markdown_table(rows, [("name", "encoder"), ("acc", "ACC %"), ("asr", "ASR %"),
                                  ("asr_nontarget", "ASR non-target %"), ("seconds", "step seconds")])
    text = "\n\n".join([f"# {title}", table, *notes, "![ACC](acc.png) ![ASR](asr.png)"]) + "\n"
    written.append(write_text_atomic(folder / "summary.md", text))
    return written
