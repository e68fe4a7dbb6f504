"""The report folder: JSON, Markdown table and PNG bar charts."""

from __future__ import annotations

import io
import json

from PIL import Image

from encoder_clean.evaluate.report import bar_chart_png, markdown_table, write_report


def test_bar_chart_is_a_png_whose_bars_scale_with_the_values():
    image = Image.open(io.BytesIO(bar_chart_png(["a", "b"], [100.0, 10.0], "t", width=200, height=200))).convert("RGB")
    assert image.size == (200, 200)
    column_a = [image.getpixel((85, y)) for y in range(200)]
    column_b = [image.getpixel((160, y)) for y in range(200)]
    coloured = lambda column: sum(1 for p in column if p not in ((255, 255, 255), (225, 225, 225), (0, 0, 0)))
    assert coloured(column_a) > 5 * coloured(column_b) > 0


def test_markdown_table_and_report_files(tmp_path):
    rows = [{"name": "poisoned", "acc": 57.5, "asr": 99.8, "asr_nontarget": 99.7, "seconds": 1.0}]
    assert "| poisoned | 57.50 | 99.80 |" in markdown_table(rows, [("name", "n"), ("acc", "a"), ("asr", "s")])
    written = write_report(tmp_path / "r", {"encoders": rows}, rows, "title", ["a note"])
    assert sorted(p.name for p in written) == ["acc.png", "asr.png", "report.json", "summary.md"]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["encoders"] == rows
    assert "a note" in (tmp_path / "r" / "summary.md").read_text()
