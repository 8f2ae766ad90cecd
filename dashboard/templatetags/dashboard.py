"""Formatting for the dashboard's templates."""

from __future__ import annotations

from django import template

from registry.jobs.gc import format_bytes

register = template.Library()


@register.filter
def bytes(value: int | None) -> str:
    return format_bytes(int(value or 0))


@register.filter
def percent(value: float | None) -> str:
    """A share as a percentage; a dash when there is nothing to divide."""
    if value is None:
        return "–"
    return f"{value * 100:.1f}%"


@register.filter
def count(value: int | None) -> str:
    return f"{int(value or 0):,}"


@register.filter
def seconds(value: int | None) -> str:
    """A rate-limit window in words."""
    if not value:
        return "–"
    if value % 3600 == 0:
        return f"{value // 3600} h"
    if value % 60 == 0:
        return f"{value // 60} min"
    return f"{value} s"
