"""The figures the dashboard and the API show, read from the statistics tables and the cache.

Definitions (docs/dashboard.md repeats them):
- hit rate by requests: (hits + stale serves) / (hits + stale serves + misses); errors are
  counted apart;
- hit rate by bytes: bytes served from cache / bytes served;
- bandwidth saved: bytes served − bytes fetched from the upstream (not below zero): what
  clients would have downloaded from the upstream without the mirror, less what the mirror
  downloaded itself (prefetches included).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db.models import Count, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from registry.models import (
    AccountSwitch,
    Blob,
    GcRun,
    Manifest,
    ManifestReference,
    PrefetchJob,
    Repository,
    RepositoryBlob,
    Tag,
    Upstream,
    UpstreamAccount,
)

from .models import COUNTERS, DailyStat, HourlyStat, UpstreamEvent

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
FILTERS = ("upstream", "repository", "account", "kind")


@dataclass
class Totals:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    stale: int = 0
    errors: int = 0
    pulls: int = 0
    bytes_served: int = 0
    bytes_from_cache: int = 0
    bytes_from_upstream: int = 0

    @classmethod
    def of(cls, row: dict) -> Totals:
        return cls(**{name: int(row.get(name) or 0) for name in COUNTERS})

    def add(self, other: Totals) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def hit_rate(self) -> float | None:
        answered = self.hits + self.stale + self.misses
        return (self.hits + self.stale) / answered if answered else None

    @property
    def byte_hit_rate(self) -> float | None:
        return self.bytes_from_cache / self.bytes_served if self.bytes_served else None

    @property
    def bandwidth_saved(self) -> int:
        return max(self.bytes_served - self.bytes_from_upstream, 0)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "hit_rate": self.hit_rate,
            "byte_hit_rate": self.byte_hit_rate,
            "bandwidth_saved": self.bandwidth_saved,
        }


_SUMS = {name: Sum(name) for name in COUNTERS}


def _filtered(queryset: QuerySet, filters: dict) -> QuerySet:
    return queryset.filter(**{name: value for name, value in filters.items() if name in FILTERS and value is not None})


def totals(since: datetime, **filters) -> Totals:
    """Everything counted in buckets that start after `since` (daily ones: the days after its day)."""
    result = Totals.of(_filtered(HourlyStat.objects.filter(start__gt=since), filters).aggregate(**_SUMS))
    result.add(Totals.of(_filtered(DailyStat.objects.filter(day__gt=since.date()), filters).aggregate(**_SUMS)))
    return result


def summary(now: datetime | None = None, **filters) -> dict[str, Totals]:
    now = now or timezone.now()
    return {name: totals(now - length, **filters) for name, length in WINDOWS.items()}


def hourly_series(now: datetime | None = None, hours: int = 24, **filters) -> list[tuple[datetime, Totals]]:
    """One point per hour, oldest first, the current hour last."""
    now = now or timezone.now()
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    starts = [current - timedelta(hours=hours - 1 - index) for index in range(hours)]
    rows = _filtered(HourlyStat.objects.filter(start__gte=starts[0]), filters).values("start").annotate(**_SUMS)
    by_start = {row["start"]: Totals.of(row) for row in rows}
    return [(start, by_start.get(start, Totals())) for start in starts]


def daily_series(now: datetime | None = None, days: int = 30, **filters) -> list[tuple[date, Totals]]:
    """One point per UTC day, oldest first, today last: daily buckets plus the hourly ones."""
    today = (now or timezone.now()).astimezone(UTC).date()
    dates = [today - timedelta(days=days - 1 - index) for index in range(days)]
    by_day: dict[date, Totals] = defaultdict(Totals)
    for row in _filtered(DailyStat.objects.filter(day__gte=dates[0]), filters).values("day").annotate(**_SUMS):
        by_day[row["day"]].add(Totals.of(row))
    first = datetime.combine(dates[0], datetime.min.time(), UTC)
    hourly = (
        _filtered(HourlyStat.objects.filter(start__gte=first), filters)
        .annotate(day=TruncDate("start", tzinfo=UTC))
        .values("day")
        .annotate(**_SUMS)
    )
    for row in hourly:
        by_day[row["day"]].add(Totals.of(row))
    return [(day, by_day.get(day, Totals())) for day in dates]


@dataclass
class RepositoryFigures:
    upstream: str
    repository: str
    totals: Totals = field(default_factory=Totals)


def top_repositories(
    now: datetime | None = None, days: int = 30, limit: int = 10, by: str = "pulls"
) -> list[RepositoryFigures]:
    """The repositories most pulled (manifest requests by tag), or with the most bandwidth saved."""
    since = (now or timezone.now()) - timedelta(days=days)
    figures: dict[tuple[str, str], RepositoryFigures] = {}
    for queryset in (HourlyStat.objects.filter(start__gt=since), DailyStat.objects.filter(day__gt=since.date())):
        for row in queryset.exclude(repository="").values("upstream", "repository").annotate(**_SUMS):
            key = (row["upstream"], row["repository"])
            figures.setdefault(key, RepositoryFigures(*key)).totals.add(Totals.of(row))
    measure = (lambda f: f.totals.pulls) if by == "pulls" else (lambda f: f.totals.bandwidth_saved)
    ranked = sorted((f for f in figures.values() if measure(f) > 0), key=lambda f: (-measure(f), f.repository))
    return ranked[:limit]


# --- the cache ---------------------------------------------------------------------------------
@dataclass
class ImageSize:
    repository: str
    digest: str
    tags: list[str]
    bytes: int
    last_pulled_at: datetime | None


@dataclass
class CacheFigures:
    bytes: int
    blobs: int
    manifests: int
    images: int
    repositories: int
    tags: int
    quota_bytes: int  # 0: no quota
    high_watermark_bytes: int
    low_watermark_bytes: int
    largest_images: list[ImageSize]

    @property
    def quota_used(self) -> float | None:
        return self.bytes / self.quota_bytes if self.quota_bytes else None


def cache_figures(largest: int = 10) -> CacheFigures:
    blobs = Blob.objects.aggregate(bytes=Sum("size"), count=Count("pk"))
    images = image_sizes()
    quota = settings.MIRROR_CACHE_MAX_BYTES
    return CacheFigures(
        bytes=int(blobs["bytes"] or 0),
        blobs=blobs["count"],
        manifests=Manifest.objects.count(),
        images=len(images),
        repositories=Repository.objects.count(),
        tags=Tag.objects.count(),
        quota_bytes=quota,
        high_watermark_bytes=int(quota * settings.MIRROR_CACHE_HIGH_WATERMARK),
        low_watermark_bytes=int(quota * settings.MIRROR_CACHE_LOW_WATERMARK),
        largest_images=sorted(images, key=lambda image: (-image.bytes, image.repository))[:largest],
    )


def image_sizes() -> list[ImageSize]:
    """Every cached image (a manifest no other manifest of its repository points at, with the
    manifests it points at) and the bytes of its distinct blobs and manifests."""
    manifests = {
        pk: (repository_id, digest, size, pulled)
        for pk, repository_id, digest, size, pulled in Manifest.objects.values_list(
            "pk", "repository_id", "digest", "size", "last_pulled_at"
        )
    }
    by_name = {(repository_id, digest): pk for pk, (repository_id, digest, _, _) in manifests.items()}
    children: dict[int, list[int]] = defaultdict(list)
    blobs_of: dict[int, set[str]] = defaultdict(set)
    for manifest_id, digest, kind in ManifestReference.objects.values_list("manifest_id", "digest", "kind"):
        if manifest_id not in manifests:
            continue
        if kind == ManifestReference.Kind.BLOB:
            blobs_of[manifest_id].add(digest)
        else:
            child = by_name.get((manifests[manifest_id][0], digest))
            if child is not None and child != manifest_id:
                children[manifest_id].append(child)
    has_parent = {child for kids in children.values() for child in kids}
    blob_sizes = dict(Blob.objects.values_list("digest", "size"))
    tags: dict[int, list[str]] = defaultdict(list)
    for manifest_id, name in Tag.objects.values_list("manifest_id", "name"):
        tags[manifest_id].append(name)
    repositories = dict(Repository.objects.values_list("pk", "name"))

    images = []
    for root, (repository_id, digest, _size, _pulled) in manifests.items():
        if root in has_parent:
            continue
        members = [root] + children.get(root, [])
        digests = set().union(*(blobs_of[member] for member in members))
        total = sum(manifests[member][2] for member in members) + sum(blob_sizes.get(d, 0) for d in digests)
        last = max((manifests[m][3] for m in members if manifests[m][3] is not None), default=None)
        images.append(ImageSize(repositories.get(repository_id, "?"), digest, sorted(tags[root]), total, last))
    return images


def image_bytes(manifest_id: int) -> int:
    """The bytes of one image: the manifest, the manifests it points at (an index's platform
    manifests) and their distinct cached blobs."""
    manifest = Manifest.objects.filter(pk=manifest_id).values("repository_id", "size").first()
    if manifest is None:
        return 0
    children = ManifestReference.objects.filter(manifest_id=manifest_id, kind=ManifestReference.Kind.MANIFEST).values(
        "digest"
    )
    members = [
        manifest_id,
        *Manifest.objects.filter(repository_id=manifest["repository_id"], digest__in=children).values_list(
            "pk", flat=True
        ),
    ]
    manifest_bytes = Manifest.objects.filter(pk__in=members).aggregate(total=Sum("size"))["total"] or 0
    digests = ManifestReference.objects.filter(manifest_id__in=members, kind=ManifestReference.Kind.BLOB).values(
        "digest"
    )
    return manifest_bytes + (Blob.objects.filter(digest__in=digests).aggregate(total=Sum("size"))["total"] or 0)


def repository_bytes_subquery() -> Subquery:
    """For annotating repositories: the bytes of the cached blobs the repository holds."""
    sizes = (
        RepositoryBlob.objects.filter(repository=OuterRef("pk"))
        .annotate(size=Subquery(Blob.objects.filter(digest=OuterRef("digest")).values("size")[:1]))
        .values("repository")
        .annotate(total=Sum("size"))
        .values("total")
    )
    return Subquery(sizes)


# --- the upstream accounts -------------------------------------------------------------------------
@dataclass
class AccountFigures:
    id: int
    upstream: str
    upstream_url: str
    username: str  # "" is anonymous
    in_use: bool
    enabled: bool
    ratelimit_limit: int | None
    ratelimit_remaining: int | None
    ratelimit_window: int | None  # seconds
    ratelimit_seen_at: datetime | None
    verification: str  # "", ok, rejected, unreachable, error
    verification_message: str
    verified_at: datetime | None  # when it was last verified (whatever the outcome)
    rejected_at: datetime | None
    cooldown_until: datetime | None
    requests_made: int
    pulls_made: int
    last_used_at: datetime | None
    upstream_reachable: bool | None  # None: not asked yet
    upstream_checked_at: datetime | None
    upstream_message: str
    last_switch: str  # the upstream's last account hand-over, in words

    @property
    def credentials_verified(self) -> bool | None:
        """True once the upstream accepted the credentials, False when it rejected them."""
        if self.rejected_at is not None or self.verification == "rejected":
            return False
        if self.verification == "ok":
            return True
        return None

    @property
    def window_ends_at(self) -> datetime | None:
        if self.ratelimit_seen_at is None or not self.ratelimit_window:
            return None
        return self.ratelimit_seen_at + timedelta(seconds=self.ratelimit_window)

    @property
    def window_passed(self) -> bool:
        ends = self.window_ends_at
        return ends is not None and ends < timezone.now()

    @property
    def remaining_share(self) -> float | None:
        if self.ratelimit_limit and self.ratelimit_remaining is not None:
            return max(min(self.ratelimit_remaining / self.ratelimit_limit, 1.0), 0.0)
        return None


ACCOUNT_FIELDS = (
    "upstream_id",
    "username",
    "enabled",
    "position",
    "ratelimit_limit",
    "ratelimit_remaining",
    "ratelimit_window",
    "ratelimit_seen_at",
    "verification",
    "verification_message",
    "verified_at",
    "rejected_at",
    "cooldown_until",
    "requests_made",
    "pulls_made",
    "last_used_at",
)


def accounts() -> list[AccountFigures]:
    """Every upstream account, the ones in use first. Only the username and what the upstream
    said are read: an account's secret is never loaded here."""
    from .stats import account_in_use

    result = []
    for upstream in Upstream.objects.order_by("name"):
        in_use = account_in_use(upstream)
        switch = AccountSwitch.objects.filter(upstream=upstream).order_by("-at", "-pk").first()
        last_switch = (
            f"{switch.from_label or '-'} → {switch.to_label or '-'} ({switch.reason}), {switch.at:%Y-%m-%d %H:%M} UTC"
            if switch
            else ""
        )
        for account in (
            UpstreamAccount.objects.filter(upstream=upstream).only(*ACCOUNT_FIELDS).order_by("position", "username")
        ):
            result.append(
                AccountFigures(
                    id=account.pk,
                    upstream=upstream.name,
                    upstream_url=upstream.url,
                    username=account.username,
                    in_use=account.username == in_use,
                    enabled=account.enabled,
                    ratelimit_limit=account.ratelimit_limit,
                    ratelimit_remaining=account.ratelimit_remaining,
                    ratelimit_window=account.ratelimit_window,
                    ratelimit_seen_at=account.ratelimit_seen_at,
                    verification=account.verification,
                    verification_message=account.verification_message,
                    verified_at=account.verified_at,
                    rejected_at=account.rejected_at,
                    cooldown_until=account.cooldown_until,
                    requests_made=account.requests_made,
                    pulls_made=account.pulls_made,
                    last_used_at=account.last_used_at,
                    upstream_reachable=upstream.reachable,
                    upstream_checked_at=upstream.checked_at,
                    upstream_message=upstream.check_message,
                    last_switch=last_switch,
                )
            )
    return sorted(result, key=lambda figures: not figures.in_use)


# --- what the workers did ------------------------------------------------------------------------
def recent_prefetches(limit: int = 8) -> list[PrefetchJob]:
    return list(PrefetchJob.objects.order_by("-created_at")[:limit])


def last_gc() -> GcRun | None:
    return GcRun.objects.order_by("-started_at").first()


def recent_events(limit: int = 10) -> list[UpstreamEvent]:
    return list(UpstreamEvent.objects.order_by("-at", "-pk")[:limit])


def job_progress(job: PrefetchJob) -> float | None:
    """Share of the job's bytes done, 0..1; None before its size is known."""
    if job.status == PrefetchJob.Status.SUCCEEDED:
        return 1.0
    if not job.bytes_total:
        return None
    return min(job.bytes_done / job.bytes_total, 1.0)
