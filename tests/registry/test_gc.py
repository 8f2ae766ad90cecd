"""Garbage collection: the policies, what they keep, and the order of deletion."""

from __future__ import annotations

from datetime import timedelta
import os
import time

from django.utils import timezone
import pytest

from registry import oci
from registry.jobs import gc, pins
from registry.jobs.imageref import parse_image
from registry.models import Blob, GcRun, Manifest, Pin, Repository, RepositoryBlob, Tag, TagPullCount, Upstream
from registry.storage.blobstore import BlobStore, FilesystemStore
from tests.registry.cachestate import age, blob_digests, cache_image, cache_index, store_blob

pytestmark = pytest.mark.django_db

KB = 1000


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_CACHE_TTL = 7 * 24 * 3600
    settings.MIRROR_CACHE_MAX_BYTES = 0
    settings.MIRROR_GC_GRACE_PERIOD = 3600
    settings.MIRROR_GC_TEMP_FILE_AGE = 3600
    return FilesystemStore(tmp_path)


@pytest.fixture
def hub(settings) -> Upstream:
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    return Upstream.objects.default()


def layer(seed: int, size: int = 10 * KB) -> bytes:
    return seed.to_bytes(4, "big") * (size // 4)


def stored(store: BlobStore, digests) -> set[str]:
    return {d for d in digests if store.size(oci.parse_digest(d)) is not None}


def snapshot(store: BlobStore) -> tuple:
    files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file() and p.name != "gc.lock")
    rows = tuple(
        sorted(model.objects.values_list("pk", flat=True))
        for model in (Repository, Manifest, Tag, Blob, RepositoryBlob, Pin)
    )
    return files, rows


def test_images_not_pulled_for_the_ttl_are_evicted_with_their_blobs(store, hub):
    old = cache_image(store, hub, "library/old", "1", [layer(1), layer(2)], days_ago=8)
    fresh = cache_image(store, hub, "library/fresh", "1", [layer(3)], days_ago=6)
    old_blobs = blob_digests(old)
    plan, run = gc.collect()
    assert [e.image.root for e in plan.evictions] == [old.pk]
    assert "not pulled for 8 days" in plan.evictions[0].reason
    assert not Manifest.objects.filter(pk=old.pk).exists()
    assert not Tag.objects.filter(repository__name="library/old").exists()
    assert not Repository.objects.filter(name="library/old").exists(), "an emptied repository leaves the catalog"
    assert set(plan.blobs) == set(old_blobs)
    assert stored(store, old_blobs) == set()
    assert not Blob.objects.filter(digest__in=old_blobs).exists()
    assert not RepositoryBlob.objects.filter(digest__in=old_blobs).exists()
    assert stored(store, blob_digests(fresh)) == set(blob_digests(fresh))
    assert run.manifests_deleted == 1 and run.tags_deleted == 1 and run.blobs_deleted == 3
    assert run.bytes_freed == sum(plan.blobs.values()) > 20 * KB
    assert GcRun.objects.get() == run
    assert run.evicted[0]["image"] == f"library/old@{old.digest}"


def test_ttl_zero_keeps_everything(store, hub, settings):
    settings.MIRROR_CACHE_TTL = 0
    cache_image(store, hub, "library/ancient", "1", [layer(1)], days_ago=400)
    plan, _ = gc.collect()
    assert plan.evictions == [] and Manifest.objects.count() == 1


def test_quota_evicts_least_recently_pulled_first_down_to_the_low_watermark(store, hub, settings):
    images = {
        days: cache_image(store, hub, f"library/img{days}", "1", [layer(days, 100 * KB)], days_ago=days)
        for days in (3, 1, 5, 2)  # 100 kB layer + small config each
    }
    total = sum(b.size for b in Blob.objects.all())
    settings.MIRROR_CACHE_TTL = 0
    settings.MIRROR_CACHE_MAX_BYTES = int(total / 0.9) - 1  # just over the high watermark
    settings.MIRROR_CACHE_HIGH_WATERMARK, settings.MIRROR_CACHE_LOW_WATERMARK = 0.9, 0.6
    # Low watermark = 2/3 of what is stored: two of the four images must go, the oldest two.
    plan, run = gc.collect()
    assert [e.image.root for e in plan.evictions] == [images[5].pk, images[3].pk]
    assert all("least recently pulled" in e.reason for e in plan.evictions)
    assert set(Manifest.objects.values_list("pk", flat=True)) == {images[1].pk, images[2].pk}
    assert run.store_bytes_after <= settings.MIRROR_CACHE_LOW_WATERMARK * settings.MIRROR_CACHE_MAX_BYTES
    # Under the high watermark now: nothing more goes.
    assert gc.collect()[0].evictions == []


def test_pinned_images_are_never_evicted(store, hub, settings):
    pinned_tag = cache_image(store, hub, "library/postgres", "17", [layer(1)], days_ago=30)
    pinned_digest = cache_image(store, hub, "library/redis", None, [layer(2)], days_ago=30)
    whole_repo = cache_image(store, hub, "library/nginx", "1", [layer(3)], days_ago=30)
    unpinned = cache_image(store, hub, "library/busybox", "1", [layer(4)], days_ago=30)
    pins.pin(parse_image("postgres:17"))
    pins.pin(parse_image(f"redis@{pinned_digest.digest}"))
    pins.pin(parse_image("nginx"), whole_repository=True)
    settings.MIRROR_CACHE_MAX_BYTES = 1  # far over quota too
    plan, _ = gc.collect()
    assert [e.image.root for e in plan.evictions] == [unpinned.pk]
    assert set(Manifest.objects.values_list("pk", flat=True)) == {pinned_tag.pk, pinned_digest.pk, whole_repo.pk}
    assert "pinned, used within the grace period" in " ".join(plan.notes)
    assert "kept library/postgres@" in " ".join(
        plan.notes
    ) and "(tags: 17): pinned (not pulled for 30 days)" in " ".join(plan.notes)
    for image in (pinned_tag, pinned_digest, whole_repo):
        assert stored(store, blob_digests(image)) == set(blob_digests(image))
    assert pins.unpin(parse_image("postgres:17"))
    gc.collect()
    assert not Manifest.objects.filter(pk=pinned_tag.pk).exists()


def test_a_pinned_tag_protects_what_it_points_at_now(store, hub):
    before = cache_image(store, hub, "library/app", None, [layer(1)], days_ago=30)
    now = cache_image(store, hub, "library/app", "stable", [layer(2)], days_ago=30)
    pins.pin(parse_image("app:stable"))
    gc.collect()
    assert not Manifest.objects.filter(pk=before.pk).exists()
    assert Manifest.objects.filter(pk=now.pk).exists()


def test_shared_blobs_survive_while_another_image_uses_them(store, hub):
    shared = layer(7)
    old = cache_image(store, hub, "library/old", "1", [shared, layer(8)], days_ago=30)
    fresh = cache_image(store, hub, "library/fresh", "1", [shared, layer(9)], days_ago=1)
    shared_digest = str(oci.sha256_digest(shared))
    age(fresh, 1, blobs=False)
    age(old, 30, blobs=True)  # the shared blob's own times are old: only the reference keeps it
    old_blobs = blob_digests(old)
    plan, _ = gc.collect()
    assert [e.image.root for e in plan.evictions] == [old.pk]
    assert shared_digest not in plan.blobs
    assert stored(store, old_blobs) == {shared_digest}
    assert stored(store, blob_digests(fresh)) == set(blob_digests(fresh))


def test_an_index_goes_with_its_children_and_keeps_them_while_used(store, hub):
    amd = cache_image(store, hub, "library/multi", None, [layer(1)], days_ago=30)
    arm = cache_image(store, hub, "library/multi", None, [layer(2)], days_ago=30)
    index = cache_index(hub, "library/multi", "1", {"linux/amd64": amd, "linux/arm64": arm}, days_ago=30)
    age(arm, 0.5)  # a client pulled the arm64 child recently: the whole image is in use
    assert gc.collect()[0].evictions == []
    assert Manifest.objects.count() == 3
    age(arm, 30)
    children_blobs = blob_digests(amd) + blob_digests(arm)
    plan, _ = gc.collect()
    assert len(plan.evictions) == 1 and plan.evictions[0].manifests[0] == index.pk, "the index goes first"
    assert set(plan.evictions[0].manifests) == {index.pk, amd.pk, arm.pk}
    assert Manifest.objects.count() == 0
    assert stored(store, children_blobs) == set()


def test_dry_run_changes_nothing_and_says_what_would_go(store, hub, settings):
    cache_image(store, hub, "library/old", "1", [layer(1)], days_ago=30)
    store_blob(store, layer(99), days_ago=30)  # referenced by nothing
    dead = store.tmp_dir / "sha256-0123456789abcdef.x.partial"
    dead.write_bytes(b"x" * 100)
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    settings.MIRROR_CACHE_MAX_BYTES = 1
    before = snapshot(store)
    plan, run = gc.collect(dry_run=True)
    assert run is None
    assert snapshot(store) == before
    assert not GcRun.objects.exists()
    text = "\n".join(plan.lines(dry_run=True))
    assert "would evict library/old@" in text and "(tags: 1)" in text
    assert f"would free {gc.format_bytes(plan.bytes_freed + 100)}" in text
    assert "3 blobs" in text and "1 leftover temporary files" in text


def test_blobs_written_or_pulled_within_the_grace_period_are_kept(store, hub):
    orphan_old = store_blob(store, layer(1), days_ago=30)
    orphan_written = store_blob(store, layer(2), days_ago=30)
    Blob.objects.filter(digest=orphan_written).update(created_at=timezone.now() - timedelta(minutes=5))
    orphan_pulled = store_blob(store, layer(3), days_ago=30)
    Blob.objects.filter(digest=orphan_pulled).update(last_pulled_at=timezone.now() - timedelta(minutes=5))
    plan, run = gc.collect()
    assert set(plan.blobs) == {orphan_old}
    assert stored(store, [orphan_old, orphan_written, orphan_pulled]) == {orphan_written, orphan_pulled}
    assert run.blobs_deleted == 1


def test_recently_used_images_are_not_evicted_even_over_quota(store, hub, settings):
    recent = cache_image(store, hub, "library/recent", "1", [layer(1)], days_ago=0.01)
    settings.MIRROR_CACHE_MAX_BYTES = 1
    plan, _ = gc.collect()
    assert plan.evictions == []
    assert "stays above its low watermark" in " ".join(plan.notes)
    assert Manifest.objects.filter(pk=recent.pk).exists()


def test_dead_fills_temporary_files_are_deleted_live_ones_kept(store, hub):
    dead = store.tmp_dir / "sha256-aaaa.1.partial"
    live = store.tmp_dir / "sha256-bbbb.2.partial"
    other = store.tmp_dir / "something-else"
    for path in (dead, live, other):
        path.write_bytes(b"x" * 10)
    old = time.time() - 7200
    os.utime(dead, (old, old))
    os.utime(other, (old, old))
    _, run = gc.collect()
    assert not dead.exists() and live.exists() and other.exists()
    assert run.temp_files_deleted == 1 and run.temp_bytes_freed == 10


def test_an_image_pulled_between_plan_and_deletion_is_kept(store, hub):
    image = cache_image(store, hub, "library/busy", "1", [layer(1)], days_ago=30)
    plan = gc.plan(store)
    assert [e.image.root for e in plan.evictions] == [image.pk]
    Manifest.objects.filter(pk=image.pk).update(last_pulled_at=timezone.now())  # a pull's flushed time
    freed = gc.apply(plan, store)
    assert freed.manifests == 0 and freed.blobs == 0
    assert stored(store, blob_digests(image)) == set(blob_digests(image))


def test_a_blob_referenced_again_after_planning_is_kept(store, hub):
    orphan = store_blob(store, layer(1), days_ago=30)
    plan = gc.plan(store)
    assert orphan in plan.blobs
    cache_manifest_referencing = cache_image(store, hub, "library/new", "1", [layer(1)], days_ago=30)
    assert orphan in blob_digests(cache_manifest_referencing)
    assert gc.apply(plan, store).blobs == 0
    assert stored(store, [orphan]) == {orphan}


def test_one_collection_at_a_time(store, hub):
    with gc.exclusive():
        with pytest.raises(gc.GcBusy):
            gc.collect()
    gc.collect()  # the lock is released


def test_evicting_chosen_images_ignores_their_age_but_not_pins(store, hub):
    recent = cache_image(store, hub, "library/recent", "1", [layer(1)], days_ago=0.01)
    pinned = cache_image(store, hub, "library/pinned", "1", [layer(2)], days_ago=30)
    pins.pin(parse_image("pinned:1"))
    recent_blobs = blob_digests(recent)
    plan, run = gc.evict({recent.pk, pinned.pk}, trigger="test")
    assert [e.image.root for e in plan.evictions] == [recent.pk]
    assert "kept library/pinned@" in plan.notes[0]
    assert not Manifest.objects.filter(pk=recent.pk).exists()
    # Its blobs were written a moment ago: they wait for a later collection.
    assert stored(store, recent_blobs) == set(recent_blobs)
    assert run.trigger == "test" and run.manifests_deleted == 1


def test_old_pull_counts_are_pruned(store, hub):
    image = cache_image(store, hub, "library/counted", "1", [layer(1)], days_ago=0.01)
    tag = Tag.objects.get(manifest=image)
    today = timezone.now().date()
    TagPullCount.objects.create(tag=tag, day=today, count=3)
    TagPullCount.objects.create(tag=tag, day=today - timedelta(days=90), count=5)
    gc.collect()
    assert list(TagPullCount.objects.values_list("count", flat=True)) == [3]
