"""The dashboard: the admin's landing page (mirrorsite/urls.py routes /admin/ here first).

Staff only: the view is wrapped by the admin site's own login check. Everything on it is read
at request time from the statistics tables and the cache's models; charts are SVG drawn here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from registry.jobs.gc import format_bytes

from . import charts, figures

HITS, STALE, MISSES, ERRORS, UPSTREAM = "#2e7d32", "#f0a202", "#1f6fb5", "#c62828", "#e4572e"


def index(request: HttpRequest) -> TemplateResponse:
    now = timezone.now()
    windows = figures.summary(now)
    hourly = figures.hourly_series(now)
    daily = figures.daily_series(now)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "now": now,
        "windows": [
            ("Last 24 hours", windows["24h"]),
            ("Last 7 days", windows["7d"]),
            ("Last 30 days", windows["30d"]),
        ],
        "day": windows["24h"],
        "charts": [
            ("Requests, hourly (last 24 hours)", _requests_chart(hourly, _hour_label)),
            ("Bytes, hourly (last 24 hours)", _bytes_chart(hourly, _hour_label)),
            ("Requests, daily (last 30 days)", _requests_chart(daily, _day_label)),
            ("Bytes, daily (last 30 days)", _bytes_chart(daily, _day_label)),
        ],
        "top_pulls": figures.top_repositories(now, by="pulls"),
        "top_saved": figures.top_repositories(now, by="saved"),
        "cache": figures.cache_figures(),
        "accounts": figures.accounts(),
        "jobs": [(job, figures.job_progress(job)) for job in figures.recent_prefetches()],
        "gc": figures.last_gc(),
        "events": figures.recent_events(),
        "app_list": admin.site.get_app_list(request),
        "can_prefetch": request.user.has_perm("registry.add_prefetchjob"),
    }
    return TemplateResponse(request, "dashboard/index.html", context)


def _hour_label(start: datetime) -> str:
    return f"{start:%H}:00"


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


Points = Sequence[tuple[date | datetime, figures.Totals]]


def _requests_chart(points: Points, label: Callable[[Any], str]) -> SafeString:
    labels = [label(when) for when, _ in points]
    series = [
        charts.Series("hits", HITS, [t.hits for _, t in points]),
        charts.Series("stale", STALE, [t.stale for _, t in points]),
        charts.Series("misses", MISSES, [t.misses for _, t in points]),
        charts.Series("errors", ERRORS, [t.errors for _, t in points]),
    ]
    return charts.bar_chart("Requests", labels, series, format_value=_count)


def _count(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _bytes_chart(points: Points, label: Callable[[Any], str]) -> SafeString:
    labels = [label(when) for when, _ in points]
    bars = [
        charts.Series("served from cache", HITS, [t.bytes_from_cache for _, t in points]),
        charts.Series("served on misses", MISSES, [t.bytes_served - t.bytes_from_cache for _, t in points]),
    ]
    lines = [charts.Series("fetched from upstream", UPSTREAM, [t.bytes_from_upstream for _, t in points])]
    return charts.bar_chart("Bytes", labels, bars, lines, format_value=lambda value: format_bytes(int(value)))
