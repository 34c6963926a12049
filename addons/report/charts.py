"""Small inline SVG charts: no script, no external font or stylesheet, identical bytes for identical data.

They render the same in browsers, in WeasyPrint's PDF and when a report is mailed as one HTML file.
"""

from __future__ import annotations

from collections import OrderedDict
from html import escape

from .model import Chart, Table

WIDTH = 640
ROW = 22
LABEL_WIDTH = 220
VALUE_WIDTH = 90
PALETTE = ("#2f5d8a", "#c8553d", "#588b5a", "#8a6d2f", "#6b4f8a", "#3d8a86")
CHANGE_COLOURS = {"disappeared": "#588b5a", "remained": "#8a8a8a", "appeared": "#c8553d"}
MAX_BARS = 15


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-family="DejaVu Sans, Arial, sans-serif" '
            f'font-size="11"{extra}>{escape(text)}</text>')


def _svg_open(height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>')


def _clip(label: str, limit: int = 34) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def bar_chart(chart_id: str, title: str, table: Table, label_column: str, value_column: str) -> Chart:
    """Horizontal bars of ``value_column`` summed per ``label_column``, largest first (ties by label)."""
    totals: dict[str, int] = OrderedDict()
    for label, value in zip(table.column(label_column), table.column(value_column), strict=True):
        key = str(label if label not in (None, "") else "(none)")
        totals[key] = totals.get(key, 0) + int(value or 0)
    items = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(items) > MAX_BARS:  # keep the chart readable; the table below it has every row
        rest = sum(v for _, v in items[MAX_BARS - 1:])
        items = [*items[: MAX_BARS - 1], (f"{len(items) - MAX_BARS + 1} others", rest)]
    top = max((v for _, v in items), default=0) or 1
    bar_space = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = max(len(items), 1) * ROW + 10
    parts = [_svg_open(height, title)]
    if not items:
        parts.append(_text(LABEL_WIDTH, 18, "no data"))
    for i, (label, value) in enumerate(items):
        y = 5 + i * ROW
        width = bar_space * value / top
        parts.append(_text(LABEL_WIDTH - 6, y + 14, _clip(label), "end"))
        parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"/>')
        parts.append(_text(LABEL_WIDTH + width + 4, y + 14, str(value)))
    parts.append("</svg>")
    return Chart(chart_id, title, "".join(parts), table.id)


def change_chart(chart_id: str, title: str, summary: list[tuple[str, int, int, int]]) -> Chart:
    """One stacked bar per dimension: how many keys disappeared, remained and appeared."""
    top = max((x + r + a for _, x, r, a in summary), default=0) or 1
    bar_space = WIDTH - LABEL_WIDTH - 20
    height = len(summary) * ROW + 34
    parts = [_svg_open(height, title)]
    for i, (dimension, *counts) in enumerate(summary):
        y = 5 + i * ROW
        parts.append(_text(LABEL_WIDTH - 6, y + 14, _clip(dimension), "end"))
        x = float(LABEL_WIDTH)
        for (name, colour), count in zip(CHANGE_COLOURS.items(), counts, strict=True):
            width = bar_space * count / top
            if count:
                parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}" fill="{colour}">'
                             f"<title>{name}: {count}</title></rect>")
                if width >= 18:
                    parts.append(_text(x + width / 2, y + 14, str(count), "middle", ' fill="#ffffff"'))
            x += width
    legend_y = len(summary) * ROW + 22
    x = float(LABEL_WIDTH)
    for name, colour in CHANGE_COLOURS.items():
        parts.append(f'<rect x="{x:.1f}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(x + 14, legend_y, name))
        x += 110
    parts.append("</svg>")
    return Chart(chart_id, title, "".join(parts), "compare-*")
