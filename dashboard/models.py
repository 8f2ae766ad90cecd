"""What the dashboard shows, as flushed from the buffered counters (see stats.py).

Counters are kept per upstream, repository, account and kind (manifest or blob) in hourly
buckets; hourly buckets older than MIRROR_STATS_HOURLY_DAYS are moved into daily ones, so a
figure over any window is the sum of both tables (a row is in one or the other, never both).
Repositories and upstreams are kept by name: statistics outlive the cached content.
"""

from __future__ import annotations

from django.db import models


class Kind(models.TextChoices):
    MANIFEST = "manifest"
    BLOB = "blob"


# The additive counters of a bucket, in the order the API and /metrics list them.
COUNTERS = (
    "requests",
    "hits",
    "misses",
    "stale",
    "errors",
    "pulls",
    "bytes_served",
    "bytes_from_cache",
    "bytes_from_upstream",
)


class Counters(models.Model):
    upstream = models.CharField(max_length=64, help_text="The upstream's name")
    repository = models.CharField(max_length=255, blank=True, help_text="As the upstream knows it")
    account = models.CharField(max_length=200, blank=True, help_text="Upstream username; empty is anonymous")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    requests = models.PositiveBigIntegerField(default=0, help_text="Manifest and blob GETs and HEADs")
    hits = models.PositiveBigIntegerField(default=0, help_text="Answered from cache")
    misses = models.PositiveBigIntegerField(default=0, help_text="Fetched from the upstream to answer")
    stale = models.PositiveBigIntegerField(default=0, help_text="Answered from cache while the upstream failed")
    errors = models.PositiveBigIntegerField(default=0, help_text="Answered with an error status")
    pulls = models.PositiveBigIntegerField(default=0, help_text="Manifest requests by tag")
    bytes_served = models.PositiveBigIntegerField(default=0, help_text="Body bytes sent to clients")
    bytes_from_cache = models.PositiveBigIntegerField(
        default=0, help_text="Of bytes served, those of hits and stale serves"
    )
    bytes_from_upstream = models.PositiveBigIntegerField(default=0, help_text="Bytes downloaded from the upstream")

    class Meta:
        abstract = True


class HourlyStat(Counters):
    start = models.DateTimeField(help_text="Start of the hour (UTC)")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["start", "upstream", "repository", "account", "kind"], name="unique_hourly_stat"
            )
        ]
        indexes = [models.Index(fields=["start"])]


class DailyStat(Counters):
    day = models.DateField(help_text="UTC day")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "upstream", "repository", "account", "kind"], name="unique_daily_stat"
            )
        ]
        indexes = [models.Index(fields=["day"])]


class TotalStat(Counters):
    """Since the mirror was installed, per upstream, account and kind (repository left empty):
    what /metrics exposes as counters, without summing every bucket on each scrape."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["upstream", "account", "kind"], name="unique_total_stat")]


class UpstreamCalls(models.Model):
    """Requests the mirror made to an upstream, by answer, with their latency (to the headers)."""

    upstream = models.CharField(max_length=64)
    account = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=8, help_text='HTTP status, or "error" when no answer came')
    count = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField(default=0.0, help_text="Sum of latencies")
    buckets = models.JSONField(default=list, help_text="Counts at or under each of stats.LATENCY_BUCKETS")

    class Meta:
        verbose_name_plural = "upstream calls"
        constraints = [models.UniqueConstraint(fields=["upstream", "account", "status"], name="unique_upstream_calls")]


class UpstreamEvent(models.Model):
    """Something an admin should hear about: an upstream failure, a digest mismatch."""

    class Kind(models.TextChoices):
        UPSTREAM_ERROR = "upstream_error", "upstream error"
        DIGEST_MISMATCH = "digest_mismatch", "digest mismatch"

    at = models.DateTimeField()
    kind = models.CharField(max_length=24, choices=Kind.choices)
    upstream = models.CharField(max_length=64, blank=True)
    account = models.CharField(max_length=200, blank=True)
    repository = models.CharField(max_length=255, blank=True)
    message = models.CharField(max_length=500)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.get_kind_display()}: {self.message}"
