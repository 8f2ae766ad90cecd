"""Garbage collection: what to evict and why, and deleting it without breaking a pull.

Policies (see inventory for what an image is):
- TTL: images not used for MIRROR_CACHE_TTL seconds are evicted (0 turns this off).
- Quota: when the blob store holds more than MIRROR_CACHE_HIGH_WATERMARK × MIRROR_CACHE_MAX_BYTES,
  images are evicted least recently used first until it would hold at most the low watermark.
- Never evicted: pinned images, and images used within MIRROR_GC_GRACE_PERIOD.
- A blob is deleted only when no remaining manifest references it and it was neither written
  nor pulled within the grace period; a fill in progress has no blob file yet, only a
  temporary one, deleted once untouched for MIRROR_GC_TEMP_FILE_AGE. In object storage, an
  upload begun longer ago than any fill may take (MIRROR_FILL_TIMEOUT) was abandoned by a
  dead process: it is aborted.

`plan` decides without changing anything (the dry run prints it); `apply` deletes in an order
that keeps every pull working: a tag before its manifest, an index before its children,
manifests before their blobs, a blob's file before its rows. A client that finds no blob file
fetches the blob from the upstream again; a client that got a manifest recently finds its
blobs, since neither the manifest nor the blobs are out of the grace period.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
import fcntl
import logging
from pathlib import Path

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from registry import oci
from registry.jobs import inventory as inventory_module
from registry.jobs.inventory import Image, Inventory
from registry.models import Blob, GcRun, Manifest, ManifestReference, Repository, RepositoryBlob, Tag, TagPullCount
from registry.storage import default_store, locks
from registry.storage.blobstore import AbandonedUpload, BlobStore

logger = logging.getLogger(__name__)

# Partial blobs of dead fills, and the records (sidecars) fills leave when they fail.
TEMP_FILE_PATTERNS = ("*.partial", "*.fill")
PULL_COUNT_RETENTION_DAYS = 30


class GcBusy(Exception):
    """Another garbage collection holds the lock."""


@dataclass
class Eviction:
    image: Image
    reason: str
    bytes_freed: int = 0  # blob bytes this eviction lets go (shared blobs go with their last image)
    manifests: list[int] = field(default_factory=list)  # pks deleted with it, root first


@dataclass
class Plan:
    now: datetime
    store_bytes: int
    evictions: list[Eviction] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)  # digest → bytes to delete
    temp_files: list[tuple[Path, int]] = field(default_factory=list)
    uploads: list[AbandonedUpload] = field(default_factory=list)  # incomplete, in object storage
    repositories: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    explicit: bool = False  # staff chose the images: their last use does not protect them

    @property
    def bytes_freed(self) -> int:
        return sum(self.blobs.values())

    @property
    def temp_bytes(self) -> int:
        return sum(size for _, size in self.temp_files) + sum(upload.size for upload in self.uploads)

    @property
    def grace_cutoff(self) -> datetime:
        return self.now - timedelta(seconds=settings.MIRROR_GC_GRACE_PERIOD)

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would evict" if dry_run else "evict"
        lines = [
            f"{verb} {eviction.image.describe()}: {eviction.reason}; frees {format_bytes(eviction.bytes_freed)}"
            for eviction in self.evictions
        ]
        lines += self.notes
        manifests = sum(len(eviction.manifests) for eviction in self.evictions)
        lines.append(
            f"{'would free' if dry_run else 'frees'} {format_bytes(self.bytes_freed + self.temp_bytes)}: "
            f"{len(self.evictions)} images ({manifests} manifests), {len(self.blobs)} blobs "
            f"({format_bytes(self.bytes_freed)}), {len(self.temp_files)} leftover temporary files and "
            f"{len(self.uploads)} incomplete uploads ({format_bytes(self.temp_bytes)}), "
            f"{len(self.repositories)} empty repositories"
        )
        lines.append(f"store: {format_bytes(self.store_bytes)} → {format_bytes(self.store_bytes - self.bytes_freed)}")
        return lines


# --- deciding -------------------------------------------------------------------------------
def plan(store: BlobStore | None = None, *, now: datetime | None = None, images: set[int] | None = None) -> Plan:
    """What a collection would delete. With `images` (manifest pks), evict the images holding
    them instead of applying the policies (pins still hold, blobs keep their grace period)."""
    store = store or default_store()
    planner = _Planner(inventory_module.take(store), now or timezone.now())
    if images is not None:
        planner.evict_chosen(images)
    else:
        planner.evict_expired()
        planner.evict_over_quota()
    planner.collect_leftovers(store)
    return planner.plan


class _Planner:
    def __init__(self, inventory: Inventory, now: datetime):
        self.inventory = inventory
        self.plan = Plan(now=now, store_bytes=inventory.store_bytes)
        self.images_left = dict(inventory.image_count)  # manifest pk → images still holding it
        self.references = dict(inventory.references)  # blob digest → manifests still referencing it
        self.evicted: set[int] = set()
        for digest in inventory.blobs:  # blobs no manifest references (any more)
            if not self.references.get(digest):
                self._free_blob(digest)

    def evict_chosen(self, manifests: set[int]) -> None:
        self.plan.explicit = True
        for image in self.inventory.images:
            if manifests.intersection(image.members):
                if image.pinned:
                    self.plan.notes.append(f"kept {image.describe()}: pinned")
                else:
                    self._evict(image, "evicted on request")

    def evict_expired(self) -> None:
        ttl = settings.MIRROR_CACHE_TTL
        if ttl <= 0:
            return
        cutoff = self.plan.now - timedelta(seconds=ttl)
        for image in self._candidates():
            if image.last_used < cutoff:
                self._evict(image, f"not pulled for {_age(self.plan.now - image.last_used)}")
        for image in self.inventory.images:
            if image.pinned and image.last_used < cutoff:
                self.plan.notes.append(
                    f"kept {image.describe()}: pinned (not pulled for {_age(self.plan.now - image.last_used)})"
                )

    def evict_over_quota(self) -> None:
        limit = settings.MIRROR_CACHE_MAX_BYTES
        if limit <= 0:
            return
        used = self.plan.store_bytes - self.plan.bytes_freed
        if used <= settings.MIRROR_CACHE_HIGH_WATERMARK * limit:
            return
        target = settings.MIRROR_CACHE_LOW_WATERMARK * limit
        for image in self._candidates():  # least recently used first
            if used <= target:
                break
            eviction = self._evict(
                image,
                f"least recently pulled ({_age(self.plan.now - image.last_used)} ago) "
                f"while the store is over {format_bytes(int(settings.MIRROR_CACHE_HIGH_WATERMARK * limit))}",
            )
            used -= eviction.bytes_freed
        if used > target:
            self.plan.notes.append(
                f"the store stays above its low watermark ({format_bytes(used)} > {format_bytes(int(target))}): "
                "the rest is pinned, used within the grace period, or blobs written within it"
            )

    def collect_leftovers(self, store: BlobStore) -> None:
        cutoff = self.plan.now.timestamp() - settings.MIRROR_GC_TEMP_FILE_AGE
        for path in sorted(p for pattern in TEMP_FILE_PATTERNS for p in store.tmp_dir.glob(pattern)):
            try:
                stat = path.stat()
            except FileNotFoundError:  # the fill just finished
                continue
            if stat.st_mtime < cutoff:
                self.plan.temp_files.append((path, stat.st_size))
        # An upload older than the longest fill has no live owner.
        oldest_live = self.plan.now - timedelta(
            seconds=max(settings.MIRROR_FILL_TIMEOUT, settings.MIRROR_GC_TEMP_FILE_AGE)
        )
        self.plan.uploads = store.abandoned_uploads(started_before=oldest_live)
        manifests_left: dict[int, int] = {}
        for pk, repository_id in self.inventory.repository_of.items():
            if pk not in self.evicted:
                manifests_left[repository_id] = manifests_left.get(repository_id, 0) + 1
        for pk, repository in self.inventory.repositories.items():
            last_used = max(filter(None, (repository.created_at, repository.last_pulled_at)))
            if not manifests_left.get(pk) and last_used < self.plan.grace_cutoff:
                self.plan.repositories.append(pk)

    def _candidates(self) -> list[Image]:
        """Images that may go, least recently used first."""
        return sorted(
            (
                image
                for image in self.inventory.images
                if image.root not in self.evicted and not image.pinned and image.last_used < self.plan.grace_cutoff
            ),
            key=lambda image: (image.last_used, image.root),
        )

    def _evict(self, image: Image, reason: str) -> Eviction:
        eviction = Eviction(image, reason)
        self.evicted.add(image.root)
        for member in image.members:
            self.images_left[member] -= 1
            if self.images_left[member] > 0:
                continue  # another image still holds this child manifest
            eviction.manifests.append(member)
            self.evicted.add(member)
            for digest in self.inventory.blobs_of.get(member, ()):
                self.references[digest] -= 1
                if self.references[digest] == 0:
                    eviction.bytes_freed += self._free_blob(digest)
        self.plan.evictions.append(eviction)
        return eviction

    def _free_blob(self, digest: str) -> int:
        blob = self.inventory.blobs.get(digest)
        if blob is None or digest in self.plan.blobs or blob.last_used >= self.plan.grace_cutoff:
            return 0
        self.plan.blobs[digest] = blob.size or 0
        return blob.size or 0


# --- deleting -------------------------------------------------------------------------------
@dataclass
class Freed:
    manifests: int = 0
    tags: int = 0
    repositories: int = 0
    blobs: int = 0
    bytes: int = 0
    temp_files: int = 0
    temp_bytes: int = 0


def apply(plan: Plan, store: BlobStore | None = None) -> Freed:
    """Delete what the plan says, checking again right before each deletion what may have
    changed since it was made (a pull, a new manifest referencing a blob)."""
    store = store or default_store()
    freed = Freed()
    cutoff = plan.grace_cutoff
    for eviction in plan.evictions:
        members = eviction.manifests
        if not plan.explicit and Manifest.objects.filter(pk__in=members, last_pulled_at__gte=cutoff).exists():
            logger.info("gc: kept %s, pulled meanwhile", eviction.image.describe())
            continue
        # Tags first, then the index, then its children: a client resolving the tag meanwhile
        # fetches it again, it never gets an index whose children are gone.
        freed.tags += Tag.objects.filter(manifest_id__in=members).delete()[1].get(Tag._meta.label, 0)
        for member in members:
            freed.manifests += Manifest.objects.filter(pk=member).delete()[1].get(Manifest._meta.label, 0)
    for digest in plan.blobs:
        freed_bytes = _delete_blob(store, digest, cutoff)
        if freed_bytes is not None:
            freed.blobs += 1
            freed.bytes += freed_bytes
    temp_cutoff = timezone.now().timestamp() - settings.MIRROR_GC_TEMP_FILE_AGE
    for path, _ in plan.temp_files:
        try:
            stat = path.stat()
            if stat.st_mtime >= temp_cutoff:
                continue  # written to again: the fill is alive
            path.unlink()
        except FileNotFoundError:
            continue
        freed.temp_files += 1
        freed.temp_bytes += stat.st_size
    for upload in plan.uploads:
        # Never one a fill is still sending (its owner holds the digest's fill lock).
        lock = locks.named_lock(f"fill:{upload.digest}")
        if not lock.try_acquire():
            continue
        try:
            store.abort_upload(upload)
        finally:
            lock.release()
        freed.temp_files += 1  # recorded with the temporary files: bytes nobody could see
        freed.temp_bytes += upload.size
    locks.remove_abandoned_lock_files(store.tmp_dir / "locks", older_than=settings.MIRROR_GC_TEMP_FILE_AGE)
    for pk in plan.repositories:
        freed.repositories += (
            Repository.objects.filter(pk=pk)
            .filter(Q(last_pulled_at__lt=cutoff) | Q(last_pulled_at__isnull=True), created_at__lt=cutoff)
            .exclude(Exists(Manifest.objects.filter(repository=OuterRef("pk"))))
            .delete()[1]
            .get(Repository._meta.label, 0)
        )
    return freed


def _delete_blob(store: BlobStore, digest: str, cutoff: datetime) -> int | None:
    """Delete one blob unless something references or used it meanwhile; the bytes freed."""
    if ManifestReference.objects.filter(digest=digest, kind=ManifestReference.Kind.BLOB).exists():
        return None
    if Blob.objects.filter(digest=digest).filter(Q(last_pulled_at__gte=cutoff) | Q(created_at__gte=cutoff)).exists():
        return None
    parsed = oci.parse_digest(digest)
    size = store.size(parsed) or 0
    # The file first: a request that no longer finds it fetches the blob from the upstream.
    store.delete(parsed)
    Blob.objects.filter(digest=digest).delete()
    RepositoryBlob.objects.filter(digest=digest).delete()
    refilled = store.size(parsed)
    if refilled is not None:  # a fill committed it again meanwhile: keep its record
        Blob.objects.get_or_create(digest=digest, defaults={"size": refilled})
    return size


# --- one collection -------------------------------------------------------------------------
def collect(
    *, dry_run: bool = False, trigger: str = "command", store: BlobStore | None = None
) -> tuple[Plan, GcRun | None]:
    """Plan, and unless a dry run, delete and record what was freed."""
    store = store or default_store()
    if dry_run:
        return plan(store), None
    with exclusive():
        started = timezone.now()
        the_plan = plan(store, now=started)
        return the_plan, record(the_plan, apply(the_plan, store), started, trigger)


def evict(manifests: set[int], *, trigger: str, store: BlobStore | None = None) -> tuple[Plan, GcRun]:
    """Evict the images holding these manifests now (staff asked), pins excepted."""
    store = store or default_store()
    with exclusive():
        started = timezone.now()
        the_plan = plan(store, now=started, images=manifests)
        return the_plan, record(the_plan, apply(the_plan, store), started, trigger)


def record(the_plan: Plan, freed: Freed, started: datetime, trigger: str) -> GcRun:
    # Pull counts older than popularity looks back are of no further use.
    keep_days = max(settings.MIRROR_POPULAR_DAYS, PULL_COUNT_RETENTION_DAYS)
    TagPullCount.objects.filter(day__lt=started.date() - timedelta(days=keep_days)).delete()
    run = GcRun.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        trigger=trigger,
        store_bytes_before=the_plan.store_bytes,
        store_bytes_after=max(the_plan.store_bytes - freed.bytes, 0),
        manifests_deleted=freed.manifests,
        tags_deleted=freed.tags,
        repositories_deleted=freed.repositories,
        blobs_deleted=freed.blobs,
        bytes_freed=freed.bytes,
        temp_files_deleted=freed.temp_files,
        temp_bytes_freed=freed.temp_bytes,
        evicted=[
            {"image": e.image.name, "tags": sorted(e.image.tags), "reason": e.reason, "bytes": e.bytes_freed}
            for e in the_plan.evictions
        ],
    )
    logger.info(
        "gc: freed %s in %d blobs, %d manifests, %d temporary files",
        format_bytes(freed.bytes + freed.temp_bytes),
        freed.blobs,
        freed.manifests,
        freed.temp_files,
    )
    return run


@contextmanager
def exclusive() -> Iterator[None]:
    """One collection at a time on this data directory (the blob store is its files)."""
    path = Path(settings.MIRROR_DATA_DIR) / "gc.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GcBusy("another garbage collection is running") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


def _age(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    if delta >= timedelta(hours=2):
        return f"{int(delta.total_seconds() // 3600)} hours"
    return f"{int(delta.total_seconds() // 60)} minutes"
