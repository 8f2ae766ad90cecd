"""Writing statistics into the database: batches into hourly buckets and lifetime totals,
then hourly buckets rolled up into daily ones.

A batch is written in one transaction, so a failed write leaves nothing half-added and the
batch can be sent again. Counters are added with UPDATE … SET n = n + k: any number of
processes may write at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from registry.models import Upstream

from .batch import LATENCY_BUCKETS, Batch, CallKey, CallStats
from .models import COUNTERS, DailyStat, HourlyStat, TotalStat, UpstreamCalls, UpstreamEvent

EVENTS_KEPT = 1000
EVENT_DAYS = 30
DELETE_CHUNK = 500


def write(batch: Batch) -> None:
    names = _upstream_names()
    with transaction.atomic():
        totals: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
        for key, counter in batch.counters.items():
            amounts = {name: amount for name, amount in counter.items() if name in COUNTERS and amount}
            if not amounts:
                continue
            upstream = _name(key.upstream, names)
            start = datetime.fromtimestamp(key.hour, UTC)
            lookup = {"upstream": upstream, "repository": key.repository, "account": key.account, "kind": key.kind}
            _add(HourlyStat, {"start": start, **lookup}, amounts)
            totals[(upstream, key.account, key.kind)].update(amounts)
        for (upstream, account, kind), amounts in totals.items():
            _add(TotalStat, {"upstream": upstream, "repository": "", "account": account, "kind": kind}, amounts)
        for key, stats in batch.calls.items():
            _add_calls(CallKey(_name(key.upstream, names), key.account, key.status), stats)
        _add_events(batch, names)


def _add(model: type[models.Model], lookup: dict, amounts: dict[str, int]) -> None:
    increments = {name: F(name) + amount for name, amount in amounts.items()}
    if model.objects.filter(**lookup).update(**increments):
        return
    try:
        with transaction.atomic():
            model.objects.create(**lookup, **amounts)
    except IntegrityError:  # created meanwhile by another process
        model.objects.filter(**lookup).update(**increments)


def _add_calls(key: CallKey, stats: CallStats) -> None:
    row, _ = UpstreamCalls.objects.select_for_update().get_or_create(
        upstream=key.upstream, account=key.account, status=key.status
    )
    buckets = row.buckets if len(row.buckets) == len(LATENCY_BUCKETS) + 1 else [0] * (len(LATENCY_BUCKETS) + 1)
    row.count += stats.count
    row.seconds += stats.micros / 1_000_000
    row.buckets = [a + b for a, b in zip(buckets, stats.buckets, strict=True)]
    row.save()


def _add_events(batch: Batch, names: dict[str, str]) -> None:
    rows = [
        UpstreamEvent(
            at=datetime.fromtimestamp(float(event.get("at", 0)), UTC),
            kind=event.get("kind", UpstreamEvent.Kind.UPSTREAM_ERROR),
            upstream=_name(str(event.get("upstream", "")), names),
            account=str(event.get("account", ""))[:200],
            repository=str(event.get("repository", ""))[:255],
            message=str(event.get("message", ""))[:500],
        )
        for event in batch.events
    ]
    if batch.dropped_events:
        rows.append(
            UpstreamEvent(
                at=timezone.now(),
                kind=UpstreamEvent.Kind.UPSTREAM_ERROR,
                message=f"{batch.dropped_events} more events like these were not kept",
            )
        )
    UpstreamEvent.objects.bulk_create(rows)


def _upstream_names() -> dict[str, str]:
    return dict(Upstream.objects.values_list("url", "name"))


def _name(upstream: str, names: dict[str, str]) -> str:
    """Upstreams recorded by URL (the upstream client knows no other name) get their name."""
    if "://" not in upstream:
        return upstream
    return names.get(upstream.rstrip("/")) or urlsplit(upstream).netloc


# --- rollup and retention ----------------------------------------------------------------------
def roll_up(now: datetime | None = None) -> int:
    """Move hourly buckets of days older than MIRROR_STATS_HOURLY_DAYS into daily ones; the
    number of hourly rows moved. A row is moved (added, then deleted) in one transaction, so it
    is counted once whether a figure reads it as hourly or as daily."""
    now = now or timezone.now()
    cutoff = datetime.combine(now.date() - timedelta(days=settings.MIRROR_STATS_HOURLY_DAYS), time.min, UTC)
    moved = 0
    for day in _days_before(cutoff):
        start = datetime.combine(day, time.min, UTC)
        with transaction.atomic():
            rows = list(
                HourlyStat.objects.select_for_update().filter(start__gte=start, start__lt=start + timedelta(days=1))
            )
            sums: dict[tuple, Counter[str]] = defaultdict(Counter)
            for row in rows:
                sums[(row.upstream, row.repository, row.account, row.kind)].update(
                    {name: getattr(row, name) for name in COUNTERS}
                )
            for (upstream, repository, account, kind), amounts in sums.items():
                lookup = {"day": day, "upstream": upstream, "repository": repository, "account": account, "kind": kind}
                _add(DailyStat, lookup, {name: amount for name, amount in amounts.items() if amount})
            ids = [row.pk for row in rows]
            for index in range(0, len(ids), DELETE_CHUNK):
                HourlyStat.objects.filter(pk__in=ids[index : index + DELETE_CHUNK]).delete()
        moved += len(rows)
    return moved


def _days_before(cutoff: datetime) -> list[date]:
    first = HourlyStat.objects.filter(start__lt=cutoff).order_by("start").values_list("start", flat=True).first()
    if first is None:
        return []
    days, day = [], first.astimezone(UTC).date()
    while day < cutoff.date():
        days.append(day)
        day += timedelta(days=1)
    return days


def prune(now: datetime | None = None) -> None:
    """Forget daily buckets past MIRROR_STATS_DAILY_DAYS, and old events."""
    now = now or timezone.now()
    DailyStat.objects.filter(day__lt=now.date() - timedelta(days=settings.MIRROR_STATS_DAILY_DAYS)).delete()
    UpstreamEvent.objects.filter(at__lt=now - timedelta(days=EVENT_DAYS)).delete()
    if UpstreamEvent.objects.count() > EVENTS_KEPT:
        kept = list(UpstreamEvent.objects.order_by("-at", "-pk").values_list("pk", flat=True)[:EVENTS_KEPT])
        UpstreamEvent.objects.exclude(pk__in=kept).delete()
