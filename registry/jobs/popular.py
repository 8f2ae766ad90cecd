"""Popular tags kept fresh before anyone asks.

The MIRROR_POPULAR_TAGS most pulled tags of the last MIRROR_POPULAR_DAYS days are revalidated
with an upstream HEAD (which Docker Hub does not count as a pull). A tag that moved is
prefetched (the platforms cached before) and pointed at its new image, so the next client
pulls it from cache. A run spends at most MIRROR_POPULAR_BUDGET upstream manifest GETs, and
stops when the upstream's rate limit is nearly spent or the upstream is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
import logging

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from registry import oci
from registry.jobs import prefetch
from registry.jobs.imageref import ImageRef, Platform, platform_of
from registry.models import Manifest, PrefetchJob, Tag, TagPullCount
from registry.proxy import pulltimes
from registry.proxy.upstream_calls import STALE_SERVABLE, upstream_client
from registry.upstreams import ratelimit

logger = logging.getLogger(__name__)

REQUESTED_BY = "popular-tags refresh"


@dataclass
class RefreshReport:
    unchanged: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # and prefetched
    skipped: list[str] = field(default_factory=list)  # over the budget
    errors: list[str] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    manifests_fetched: int = 0
    stopped: str = ""

    def __str__(self) -> str:
        text = (
            f"{len(self.unchanged)} unchanged, {len(self.moved)} moved and prefetched, "
            f"{len(self.skipped)} over budget, {len(self.errors)} errors, "
            f"{self.manifests_fetched} manifests fetched"
        )
        return f"{text}; stopped: {self.stopped}" if self.stopped else text


def popular_tags(limit: int | None = None, days: int | None = None) -> list[Tag]:
    """The most pulled tags, most pulled first."""
    limit = settings.MIRROR_POPULAR_TAGS if limit is None else limit
    days = settings.MIRROR_POPULAR_DAYS if days is None else days
    since = timezone.now().date() - timedelta(days=max(days, 1) - 1)
    ranked = (
        TagPullCount.objects.filter(day__gte=since)
        .values("tag")
        .annotate(pulls=Sum("count"))
        .order_by("-pulls", "tag")[:limit]
    )
    ids = [row["tag"] for row in ranked]
    tags = Tag.objects.select_related("repository__upstream", "manifest").in_bulk(ids)
    return [tags[pk] for pk in ids if pk in tags]


def refresh_popular() -> RefreshReport:
    report = RefreshReport()
    with pulltimes.uncounted():  # keeping a tag fresh must not make it look popular
        for tag in popular_tags():
            if report.manifests_fetched >= settings.MIRROR_POPULAR_BUDGET:
                report.skipped.append(str(tag))
                continue
            report.stopped = ratelimit.nearly_spent(tag.repository.upstream) or ""
            if report.stopped:
                break
            try:
                _refresh(tag, report)
            except STALE_SERVABLE as error:
                report.stopped = f"upstream unavailable: {error.message}"
                break
            except oci.RegistryError as error:
                report.errors.append(f"{tag}: {error.code}: {error.message}")
            if report.stopped:
                break
    logger.info("popular tags refreshed: %s", report)
    return report


def _refresh(tag: Tag, report: RefreshReport) -> None:
    upstream = tag.repository.upstream
    head = upstream_client(upstream).head_manifest(tag.repository.name, tag.name)
    if not head.digest:
        report.errors.append(f"{tag}: the upstream did not say the digest")
        return
    now = timezone.now()
    if head.digest == tag.manifest.digest:
        # The upstream just confirmed the tag: the next pull need not ask again within the TTL.
        Tag.objects.filter(pk=tag.pk, manifest_id=tag.manifest_id).update(validated_at=now)
        report.unchanged.append(str(tag))
        return
    image = ImageRef(upstream, tag.repository.name, oci.Reference(digest=oci.parse_digest(head.digest)))
    job = prefetch.create_job(image, cached_platforms(tag.manifest), requested_by=REQUESTED_BY)
    job = prefetch.run(job.pk)
    report.jobs.append(job.pk)
    report.manifests_fetched += job.manifests_fetched
    moved_to = Manifest.objects.filter(repository=tag.repository, digest=head.digest).first()
    if moved_to is not None:
        # Point the tag as a pull revalidating it would: the upstream said where it is now.
        Tag.objects.filter(pk=tag.pk).update(manifest=moved_to, validated_at=now)
    if job.status == PrefetchJob.Status.SUCCEEDED:
        report.moved.append(str(tag))
    elif job.status == PrefetchJob.Status.STOPPED:
        report.stopped = job.message
    else:
        report.errors.append(f"{tag}: {job.message}")


def cached_platforms(manifest: Manifest) -> list[Platform]:
    """The platforms of an index that clients pulled (their manifests are cached); none means all."""
    entries = oci.ManifestDocument.parse(bytes(manifest.content)).index_entries()
    if entries is None:
        return []
    cached = set(
        Manifest.objects.filter(
            repository_id=manifest.repository_id, digest__in=[entry["digest"] for entry in entries]
        ).values_list("digest", flat=True)
    )
    platforms = {platform_of(entry) for entry in entries if entry["digest"] in cached}
    return sorted((platform for platform in platforms if platform is not None), key=str)
