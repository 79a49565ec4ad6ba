"""The jobs finished per minute as an inline SVG bar chart, drawn on the server: no library, no script.
Colours come from the console's stylesheet (classes), so the page's CSP needs no inline styles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 1240, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22  # room for the axis labels
MINUS = "\u2212"


def per_minute(counts: Sequence[tuple[float, int]], now: float, minutes: int = 30) -> list[tuple[float, int]]:
    """Each of the last `minutes` minutes (the current one last) with its count, zero when absent."""
    by_minute = {int(at // 60) * 60: jobs for at, jobs in counts}
    current = int(now // 60) * 60
    starts = [current - 60 * back for back in range(minutes - 1, -1, -1)]
    return [(float(start), int(by_minute.get(start, 0))) for start in starts]


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... that is at least `value` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def jobs_chart(series: Sequence[tuple[float, int]]) -> str:
    """The SVG of a per-minute series; an accessible label says what it shows."""
    top = nice_ceiling(max((jobs for _, jobs in series), default=0))
    total = sum(jobs for _, jobs in series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{total:,} jobs finished in the last {len(series)} minutes">'
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_short(top * fraction)}</text>"
        )
    for i, (start, jobs) in enumerate(series):
        height = plot_h * jobs / top
        x, y = LEFT + i * slot + 1.5, TOP + plot_h - height
        label = f"{_clock(start)} UTC: {jobs:,} jobs"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot - 3:.1f}" height="{height:.1f}" rx="2">'
            f"<title>{escape(label)}</title></rect>"
        )
    half = len(series) // 2
    for i, text in ((0, f"{MINUS}{len(series)} min"), (half, f"{MINUS}{len(series) - half} min")):
        parts.append(f'<text class="axis" x="{LEFT + i * slot:.1f}" y="{HEIGHT - 6}">{text}</text>')
    parts.append(f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">now</text>')
    if total == 0:
        parts.append(
            f'<text class="empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
            'text-anchor="middle">no jobs finished in this time</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M")
