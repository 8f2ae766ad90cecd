"""Server-side SVG charts, and the Celery tasks and schedule of the statistics."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree

from django.utils import timezone
import pytest

from dashboard import charts, stats, tasks
from dashboard.batch import Batch, CounterKey
from dashboard.models import DailyStat, HourlyStat

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ceilings():
    assert [charts.nice_ceiling(v) for v in (0, 0.3, 1, 7, 12, 230, 4100)] == [1, 0.5, 1, 10, 20, 250, 5000]


def test_a_chart_is_svg_with_stacked_bars_a_line_tooltips_and_escaped_labels():
    svg = charts.bar_chart(
        "Requests <today>",
        ["a&b", "c"],
        [charts.Series("hits", "#0a0", [3, 1]), charts.Series("misses", "#00a", [1, 0])],
        [charts.Series("upstream", "#a00", [2, 2])],
    )
    root = ElementTree.fromstring(str(svg))
    bars = [rect for rect in root.iter(f"{SVG}rect") if rect.find(f"{SVG}title") is not None]
    assert [rect.find(f"{SVG}title").text for rect in bars] == ["a&b: hits 3", "a&b: misses 1", "c: hits 1"]
    heights = [float(rect.get("height")) for rect in bars]
    assert heights[0] == pytest.approx(3 * heights[1]) and heights[2] == pytest.approx(heights[1])
    assert root.find(f"{SVG}polyline") is not None
    assert root.find(f"{SVG}title").text == "Requests <today>"


def test_an_empty_chart_says_so():
    svg = str(charts.bar_chart("Bytes", ["x"] * 24, [charts.Series("hits", "#0a0", [0] * 24)]))
    assert "No traffic recorded yet" in svg
    ElementTree.fromstring(svg)


@pytest.mark.parametrize("redis_url", ["", "redis://127.0.0.1:6379/11"])
def test_the_schedule_moves_shared_statistics_and_rolls_up(redis_url, monkeypatch):
    import importlib

    from mirrorsite import settings as settings_module

    monkeypatch.setenv("MIRROR_STATS_REDIS_URL", redis_url)
    monkeypatch.setenv("MIRROR_STATS_FLUSH_INTERVAL", "0")
    reloaded = importlib.reload(settings_module)
    try:
        schedule = {entry["task"]: entry["schedule"] for entry in reloaded.CELERY_BEAT_SCHEDULE.values()}
    finally:
        monkeypatch.undo()
        importlib.reload(settings_module)
    assert schedule["dashboard.roll_up_stats"] == 3600.0
    # Without Redis each process writes its own statistics: there is nothing to move.
    assert schedule.get("dashboard.flush_stats") == (60.0 if redis_url else None)


@pytest.mark.django_db
def test_the_tasks_flush_this_process_and_roll_up(settings):
    settings.MIRROR_STATS_REDIS_URL = ""
    old = timezone.now() - timedelta(days=settings.MIRROR_STATS_HOURLY_DAYS + 2)
    batch = Batch()
    batch.count(CounterKey(old.timestamp() - old.timestamp() % 3600, "hub", "library/a", "", "blob"), requests=3)
    stats.put_back(batch)
    assert tasks.flush_stats() == "flushed"
    assert HourlyStat.objects.get().requests == 3
    assert tasks.roll_up_stats() == "rolled up 1 hourly buckets"
    assert DailyStat.objects.get().requests == 3 and not HourlyStat.objects.exists()
