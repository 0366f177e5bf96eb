"""Small charts drawn on the server as inline SVG: no script, no request, readable by a screen
reader through their title (each page also lists the numbers in a table beside the chart).
Every value drawn is a number this module formats itself; every text is escaped."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 320, 120, 24


def _open(title: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>'
    )


def _y(value: float, low: float, high: float, height: int = HEIGHT) -> float:
    span = high - low or 1.0
    return round(height - PAD - (value - low) / span * (height - 2 * PAD), 1)


def line(title: str, values: Sequence[float], *, low: float = 0.0, high: float = 1.0) -> Markup:
    """A line through values in order (a score's history), the last point marked."""
    if not values:
        return Markup("")
    width = WIDTH
    step = (width - 2 * PAD) / max(len(values) - 1, 1)
    points = [(round(PAD + i * step, 1), _y(v, low, high)) for i, v in enumerate(values)]
    path = " ".join(f"{x},{y}" for x, y in points)
    last_x, last_y = points[-1]
    svg = (
        _open(title)
        + f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{width - PAD}" y2="{HEIGHT - PAD}" '
        'class="axis"/>'
        + f'<text x="2" y="{_y(high, low, high) + 4}" class="tick">{high:.0%}</text>'
        + f'<text x="2" y="{_y(low, low, high) + 4}" class="tick">{low:.0%}</text>'
        + f'<polyline fill="none" class="series" points="{path}"/>'
        + f'<circle cx="{last_x}" cy="{last_y}" r="3" class="series-dot"/>'
        + "</svg>"
    )
    return Markup(svg)  # noqa: S704  (numbers formatted here; the title escaped)


def bars(
    title: str,
    items: Sequence[tuple[str, float | None]],
    *,
    low: float | None = None,
    high: float | None = None,
    intervals: Sequence[tuple[float, float] | None] | None = None,
    percent: bool = False,
) -> Markup:
    """Vertical bars, one per labelled value (None: no bar), with 95% intervals as whiskers."""
    values = [v for _, v in items if v is not None]
    if not values:
        return Markup("")
    spans = [b for iv in intervals or [] if iv for b in iv]
    lo = min([0.0, *values, *spans]) if low is None else low
    hi = max([*values, *spans, 0.0]) if high is None else high
    if math.isclose(lo, hi):
        hi = lo + 1.0
    width = max(WIDTH, PAD * 2 + 22 * len(items))
    slot = (width - 2 * PAD) / len(items)
    zero = _y(max(lo, min(0.0, hi)), lo, hi)
    parts = [
        _open(title, width),
        f'<line x1="{PAD}" y1="{zero}" x2="{width - PAD}" y2="{zero}" class="axis"/>',
    ]
    for i, (label, value) in enumerate(items):
        x = PAD + i * slot + slot * 0.15
        w = slot * 0.7
        if value is not None:
            y = _y(value, lo, hi)
            top, height = min(y, zero), abs(zero - y)
            shown = f"{value:.0%}" if percent else f"{value:,.1f}"
            parts.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" height="{max(height, 0.5):.1f}" '
                f'class="bar"><title>{html.escape(label)}: {shown}</title></rect>'
            )
        interval = intervals[i] if intervals and i < len(intervals) else None
        if interval is not None:
            cx = x + w / 2
            parts.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{_y(interval[0], lo, hi)}" '
                f'y2="{_y(interval[1], lo, hi)}" class="whisker"/>'
            )
        if len(items) <= 14:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{HEIGHT - 6}" class="tick" text-anchor="middle">'
                f"{html.escape(label[-5:])}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (numbers formatted here; labels escaped)


def calibration(title: str, points: Sequence[tuple[float, float]]) -> Markup:
    """Observed rate against predicted probability by bin, with the diagonal of perfect
    calibration."""
    if not points:
        return Markup("")
    size = HEIGHT + 60
    top = max([*(p for pair in points for p in pair), 0.05])
    top = min(1.0, math.ceil(top * 10) / 10)

    def at(v: float) -> float:
        return round(PAD + v / top * (size - 2 * PAD), 1)

    def up(v: float) -> float:
        return round(size - PAD - v / top * (size - 2 * PAD), 1)

    dots = "".join(
        f'<circle cx="{at(p)}" cy="{up(o)}" r="3" class="series-dot">'
        f"<title>predicted {p:.0%}, happened {o:.0%}</title></circle>"
        for p, o in points
    )
    svg = (
        _open(title, size, size)
        + f'<line x1="{at(0)}" y1="{up(0)}" x2="{at(top)}" y2="{up(top)}" class="diagonal"/>'
        + f'<line x1="{PAD}" y1="{size - PAD}" x2="{size - PAD}" y2="{size - PAD}" class="axis"/>'
        + f'<text x="{size - PAD}" y="{size - 6}" class="tick" text-anchor="end">{top:.0%}</text>'
        + dots
        + "</svg>"
    )
    return Markup(svg)  # noqa: S704  (numbers formatted here; the title escaped)
