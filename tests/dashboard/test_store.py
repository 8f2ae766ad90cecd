"""Batches into hourly buckets and totals; hourly buckets rolled up into daily ones without a
figure changing; retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone
import pytest

from dashboard import figures, store
from dashboard.batch import LATENCY_BUCKETS, Batch, CallKey, CounterKey
from dashboard.models import DailyStat, HourlyStat, TotalStat, UpstreamCalls, UpstreamEvent
from registry.models import Upstream

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


def hour(at: datetime) -> float:
    return at.replace(minute=0, second=0, microsecond=0).timestamp()


def batch_at(at: datetime, repository: str = "library/a", **amounts: int) -> Batch:
    batch = Batch()
    batch.count(CounterKey(hour(at), "hub", repository, "bot", "blob"), **amounts)
    return batch


def test_batches_add_up_in_hourly_buckets_and_totals():
    store.write(batch_at(NOW, requests=2, hits=1, misses=1, bytes_served=300, bytes_from_cache=100))
    store.write(batch_at(NOW, requests=1, hits=1, bytes_served=100, bytes_from_cache=100))
    store.write(batch_at(NOW - timedelta(hours=1), requests=5))
    assert HourlyStat.objects.count() == 2
    row = HourlyStat.objects.get(start=NOW.replace(minute=0))
    assert (row.requests, row.hits, row.misses, row.bytes_served, row.bytes_from_cache) == (3, 2, 1, 400, 200)
    total = TotalStat.objects.get()
    assert (total.upstream, total.account, total.kind, total.requests) == ("hub", "bot", "blob", 8)


def test_upstream_calls_merge_with_their_latency_histogram_and_urls_become_names(settings):
    Upstream.objects.create(name="quay", url="https://quay.example")
    batch = Batch()
    for seconds in (0.01, 0.3, 40.0):
        batch.call(CallKey("https://quay.example", "", "200"), seconds)
    store.write(batch)
    store.write(batch)
    calls = UpstreamCalls.objects.get()
    assert (calls.upstream, calls.status, calls.count) == ("quay", "200", 6)
    assert calls.seconds == pytest.approx(2 * 40.31, rel=1e-3)
    assert len(calls.buckets) == len(LATENCY_BUCKETS) + 1
    assert (calls.buckets[0], calls.buckets[3], calls.buckets[-1]) == (2, 2, 2)


def test_events_are_kept_and_a_flood_is_summarised():
    batch = Batch()
    for index in range(250):
        batch.event({"at": NOW.timestamp(), "kind": "upstream_error", "upstream": "hub", "message": f"failure {index}"})
    store.write(batch)
    assert UpstreamEvent.objects.count() == 201
    assert UpstreamEvent.objects.filter(message="50 more events like these were not kept").exists()


def test_roll_up_moves_old_hours_into_days_and_no_figure_changes(settings):
    settings.MIRROR_STATS_HOURLY_DAYS = 8
    old_day = NOW - timedelta(days=12)
    for offset in range(5):  # five hours of one old day, two repositories
        store.write(batch_at(old_day.replace(hour=offset), requests=1, bytes_served=10))
        store.write(batch_at(old_day.replace(hour=offset), repository="library/b", requests=2))
    store.write(batch_at(NOW, requests=7))
    before = figures.totals(NOW - timedelta(days=30))
    daily_before = figures.daily_series(NOW, days=30)

    moved = store.roll_up(NOW)

    assert moved == 10
    assert HourlyStat.objects.count() == 1, "recent hours stay hourly"
    assert dict(DailyStat.objects.values_list("repository", "requests")) == {"library/a": 5, "library/b": 10}
    assert DailyStat.objects.get(repository="library/a").bytes_served == 50
    assert figures.totals(NOW - timedelta(days=30)) == before == figures.Totals(requests=22, bytes_served=50)
    assert figures.daily_series(NOW, days=30) == daily_before
    assert store.roll_up(NOW) == 0, "nothing left to move"

    store.write(batch_at(old_day, requests=1))  # a late flush for an old hour
    store.roll_up(NOW)
    assert DailyStat.objects.get(repository="library/a").requests == 6, "added to the day, not replacing it"


def test_prune_forgets_old_days_and_events(settings):
    settings.MIRROR_STATS_DAILY_DAYS = 30
    DailyStat.objects.create(day=(NOW - timedelta(days=31)).date(), upstream="hub", kind="blob", requests=1)
    DailyStat.objects.create(day=(NOW - timedelta(days=29)).date(), upstream="hub", kind="blob", requests=1)
    UpstreamEvent.objects.create(at=NOW - timedelta(days=40), kind="upstream_error", message="old")
    UpstreamEvent.objects.create(at=NOW, kind="upstream_error", message="new")
    store.prune(NOW)
    assert DailyStat.objects.count() == 1
    assert list(UpstreamEvent.objects.values_list("message", flat=True)) == ["new"]


def test_windows_and_series_read_both_tables():
    store.write(batch_at(NOW, requests=1, hits=1, bytes_served=100, bytes_from_cache=100))
    store.write(batch_at(NOW - timedelta(hours=30), requests=1, misses=1, bytes_served=100, bytes_from_upstream=100))
    DailyStat.objects.create(day=(NOW - timedelta(days=20)).date(), upstream="hub", kind="blob", requests=4, hits=4)
    summary = figures.summary(NOW)
    assert (summary["24h"].requests, summary["7d"].requests, summary["30d"].requests) == (1, 2, 6)
    assert summary["24h"].hit_rate == 1.0 and summary["7d"].hit_rate == 0.5
    assert summary["7d"].byte_hit_rate == 0.5 and summary["7d"].bandwidth_saved == 100
    hourly = figures.hourly_series(NOW)
    assert len(hourly) == 24 and hourly[-1][0] == NOW.replace(minute=0) and hourly[-1][1].requests == 1
    daily = figures.daily_series(NOW)
    assert len(daily) == 30 and daily[-1][0] == NOW.date()
    assert sum(t.requests for _, t in daily) == 6
    assert figures.summary(NOW, repository="library/a")["30d"].requests == 2
    assert timezone.is_aware(hourly[0][0])
