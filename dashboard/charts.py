"""Charts drawn on the server as inline SVG: no script, no CDN, readable in any browser.

A chart is stacked bars (one stack per point) with optional lines over them, a value axis
with four grid lines, a legend, and a tooltip (<title>) on every bar and point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 30, 24
GRID_LINES = 4
MAX_X_LABELS = 12


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    values: Sequence[float]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def bar_chart(
    title: str,
    labels: Sequence[str],
    bars: Sequence[Series],
    lines: Sequence[Series] = (),
    *,
    format_value: Callable[[float], str] = lambda value: f"{value:g}",
) -> SafeString:
    count = len(labels)
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    stacks = [sum(series.values[index] for series in bars) for index in range(count)]
    peak = max([*stacks, *(value for series in lines for value in series.values)], default=0)
    top = nice_ceiling(peak)
    slot = plot_width / max(count, 1)

    def y(value: float) -> float:
        return TOP + plot_height - plot_height * value / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="sans-serif">',
        f"<title>{escape(title)}</title>",
    ]
    for step in range(GRID_LINES + 1):
        value = top * step / GRID_LINES
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="currentColor" stroke-opacity="{0.5 if step == 0 else 0.15}"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" fill="currentColor">{escape(format_value(value))}</text>'
        )
    for index, label in enumerate(labels):
        base = 0.0
        x = LEFT + slot * index + slot * 0.15
        for series in bars:
            value = series.values[index]
            if value <= 0:
                continue
            parts.append(
                f'<rect x="{x:.1f}" y="{y(base + value):.1f}" width="{slot * 0.7:.1f}" '
                f'height="{y(base) - y(base + value):.1f}" fill="{series.color}">'
                f"<title>{escape(label)}: {escape(series.name)} {escape(format_value(value))}</title></rect>"
            )
            base += value
    for series in lines:
        points = [(LEFT + slot * (index + 0.5), y(value)) for index, value in enumerate(series.values)]
        if not points:
            continue
        parts.append(
            f'<polyline fill="none" stroke="{series.color}" stroke-width="2" '
            f'points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in points)}"/>'
        )
        for (px, py), label, value in zip(points, labels, series.values, strict=True):
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{series.color}">'
                f"<title>{escape(label)}: {escape(series.name)} {escape(format_value(value))}</title></circle>"
            )
    every = max(math.ceil(count / MAX_X_LABELS), 1)
    for index, label in enumerate(labels):
        if (count - 1 - index) % every == 0:  # counted from the newest point, which is always labelled
            parts.append(
                f'<text x="{LEFT + slot * (index + 0.5):.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                f'fill="currentColor">{escape(label)}</text>'
            )
    x = LEFT
    for series in [*bars, *lines]:
        parts.append(
            f'<rect x="{x}" y="8" width="10" height="10" fill="{series.color}"/>'
            f'<text x="{x + 14}" y="17" fill="currentColor">{escape(series.name)}</text>'
        )
        x += 24 + 7 * len(series.name)
    if peak <= 0:
        parts.append(
            f'<text x="{LEFT + plot_width / 2:.1f}" y="{TOP + plot_height / 2:.1f}" text-anchor="middle" '
            f'fill="currentColor" fill-opacity="0.6">No traffic recorded yet</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))
