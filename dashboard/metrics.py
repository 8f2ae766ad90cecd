"""`GET /metrics`: Prometheus text metrics, read from the statistics tables and the cache.

Counters are the lifetime totals written at each statistics flush (so they lag the traffic by
at most a flush interval, and survive restarts); gauges are read when scraped. They name
upstreams and their accounts, so they are served only to clients in MIRROR_MONITORING_NETWORKS
(by default the allow-list's, or without one loopback and the private ranges); with
MIRROR_METRICS_TOKEN set, only to a client presenting `Authorization: Bearer <token>`, from
wherever it is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
import json

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from access.networks import monitoring_admitted, presents_metrics_token
from registry.models import Blob, GcRun, Manifest, Repository, Upstream, UpstreamAccount
from registry.storage import default_store

from .batch import LATENCY_BUCKETS
from .models import TotalStat, UpstreamCalls

# counter field → (metric name without _total, help)
REQUEST_COUNTERS = {
    "requests": ("mirrorsite_requests", "Manifest and blob requests (GET and HEAD)"),
    "hits": ("mirrorsite_cache_hits", "Requests answered from cache"),
    "misses": ("mirrorsite_cache_misses", "Requests that fetched from the upstream"),
    "stale": ("mirrorsite_stale_serves", "Requests answered from cache while the upstream failed"),
    "errors": ("mirrorsite_request_errors", "Requests answered with an error status"),
    "pulls": ("mirrorsite_pulls", "Manifest requests by tag"),
    "bytes_served": ("mirrorsite_served_bytes", "Body bytes sent to clients"),
    "bytes_from_cache": ("mirrorsite_served_from_cache_bytes", "Body bytes sent from cache"),
    "bytes_from_upstream": ("mirrorsite_upstream_fetched_bytes", "Bytes downloaded from the upstream"),
}


def metrics(request: HttpRequest) -> HttpResponse:
    if settings.MIRROR_METRICS_TOKEN and not presents_metrics_token(request):
        response = HttpResponse("metrics need a bearer token\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not settings.MIRROR_METRICS_TOKEN and not monitoring_admitted(request):
        return HttpResponse("metrics are not served to your address\n", status=403, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class MirrorCollector:
    def collect(self) -> Iterator[Metric]:
        yield from _request_counters()
        yield from _upstream_calls()
        yield from _upstream_gauges()
        yield from _cache_gauges()
        yield from _gc_counters()


def _request_counters() -> Iterator[Metric]:
    rows = TotalStat.objects.values("upstream", "kind").annotate(**{name: Sum(name) for name in REQUEST_COUNTERS})
    families = {
        name: CounterMetricFamily(metric, help_text, labels=["upstream", "kind"])
        for name, (metric, help_text) in REQUEST_COUNTERS.items()
    }
    for row in rows:
        for name, family in families.items():
            family.add_metric([row["upstream"], row["kind"]], int(row[name] or 0))
    yield from families.values()


def _upstream_calls() -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "mirrorsite_upstream_requests", "Requests to upstreams, by answer", labels=["upstream", "status"]
    )
    latency = HistogramMetricFamily(
        "mirrorsite_upstream_request_duration_seconds",
        "Upstream latency until the answer's headers",
        labels=["upstream", "status"],
    )
    merged: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)])
    for row in UpstreamCalls.objects.all():
        entry = merged[(row.upstream, row.status)]
        entry[0] += row.count
        entry[1] += row.seconds
        if len(row.buckets) == len(LATENCY_BUCKETS) + 1:
            entry[2] = [a + b for a, b in zip(entry[2], row.buckets, strict=True)]
    for (upstream, status), (count, seconds, buckets) in sorted(merged.items()):
        requests.add_metric([upstream, status], count)
        cumulative, running = [], 0
        for bound, amount in zip([*map(str, LATENCY_BUCKETS), "+Inf"], buckets, strict=True):
            running += amount
            cumulative.append((bound, running))
        latency.add_metric([upstream, status], cumulative, seconds)
    yield requests
    yield latency


def _upstream_gauges() -> Iterator[Metric]:
    remaining = GaugeMetricFamily(
        "mirrorsite_upstream_ratelimit_remaining",
        "Pulls left in the window, as the upstream last said",
        labels=["upstream", "account"],
    )
    limit = GaugeMetricFamily(
        "mirrorsite_upstream_ratelimit_limit", "Pulls allowed per window", labels=["upstream", "account"]
    )
    for name, username, left, allowed in UpstreamAccount.objects.values_list(
        "upstream__name", "username", "ratelimit_remaining", "ratelimit_limit"
    ):
        if left is not None:
            remaining.add_metric([name, username], left)
        if allowed is not None:
            limit.add_metric([name, username], allowed)
    up = GaugeMetricFamily(
        "mirrorsite_upstream_up", "1 when the upstream answered when last asked", labels=["upstream"]
    )
    for name, reachable in Upstream.objects.filter(reachable__isnull=False).values_list("name", "reachable"):
        up.add_metric([name], 1 if reachable else 0)
    yield from (remaining, limit, up)


def _cache_gauges() -> Iterator[Metric]:
    blobs = Blob.objects.aggregate(bytes=Sum("size"), count=Count("pk"))
    yield GaugeMetricFamily("mirrorsite_cache_bytes", "Blob bytes stored", value=int(blobs["bytes"] or 0))
    yield GaugeMetricFamily("mirrorsite_cache_blobs", "Blobs stored", value=blobs["count"])
    yield GaugeMetricFamily("mirrorsite_cache_manifests", "Manifests cached", value=Manifest.objects.count())
    yield GaugeMetricFamily("mirrorsite_cache_repositories", "Repositories cached", value=Repository.objects.count())
    yield GaugeMetricFamily(
        "mirrorsite_cache_quota_bytes", "MIRROR_CACHE_MAX_BYTES (0: none)", value=settings.MIRROR_CACHE_MAX_BYTES
    )
    yield GaugeMetricFamily(
        "mirrorsite_fills_in_progress", "Blob downloads from the upstream under way", value=fills_in_progress()
    )


def fills_in_progress() -> int:
    """Fills with a record (tmp/*.fill) that has not failed: a fill removes its record when done."""
    count = 0
    for sidecar in default_store().tmp_dir.glob("*.fill"):
        try:
            if json.loads(sidecar.read_text()).get("failed") is None:
                count += 1
        except (OSError, ValueError, AttributeError):
            continue
    return count


def _gc_counters() -> Iterator[Metric]:
    runs = GcRun.objects.aggregate(
        runs=Count("pk"),
        manifests=Sum("manifests_deleted"),
        blobs=Sum("blobs_deleted"),
        freed=Sum("bytes_freed"),
        temp=Sum("temp_bytes_freed"),
    )
    yield CounterMetricFamily("mirrorsite_gc_runs", "Garbage collections and evictions run", value=runs["runs"])
    yield CounterMetricFamily("mirrorsite_evicted_manifests", "Manifests evicted", value=int(runs["manifests"] or 0))
    yield CounterMetricFamily(
        "mirrorsite_evicted_blobs", "Blobs deleted by garbage collection", value=int(runs["blobs"] or 0)
    )
    yield CounterMetricFamily(
        "mirrorsite_gc_freed_bytes",
        "Bytes freed by garbage collection",
        value=int(runs["freed"] or 0) + int(runs["temp"] or 0),
    )
