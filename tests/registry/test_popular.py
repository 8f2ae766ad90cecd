"""Popular tags kept fresh, against the real upstream: tags are moved there and the refresh
must have the new image cached before any client asks."""

from __future__ import annotations

from datetime import timedelta
import itertools
import json

from django.utils import timezone
import pytest

from registry import memory, oci
from registry.jobs import popular
from registry.jobs.imageref import Platform
from registry.models import Manifest, PrefetchJob, Tag, TagPullCount, Upstream
from registry.proxy import blobs, manifests, pulltimes
from registry.storage.blobstore import BlobStore, FilesystemStore
from registry.upstreams.routing import Route
from tests.registry.cachestate import cache_image
from tests.support.images import push_image, push_index

pytestmark = pytest.mark.django_db(transaction=True)
KB = 1024
SEEDS = itertools.count(7100)


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_TAG_TTL = 3600
    settings.MIRROR_PULL_TIME_FLUSH_INTERVAL = 3600
    settings.MIRROR_POPULAR_TAGS, settings.MIRROR_POPULAR_DAYS, settings.MIRROR_POPULAR_BUDGET = 10, 7, 20
    settings.MIRROR_PREFETCH_BACKOFF = 0
    return FilesystemStore(tmp_path)


@pytest.fixture
def hub(settings, store, upstream) -> Upstream:
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = upstream.username, upstream.password
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    return Upstream.objects.default()


def client_pull(hub: Upstream, name: str, tag: str, platform: str | None = None) -> str:
    """What a client does: the manifest by tag, a child by digest, every blob. The digest pulled."""
    result = manifests.get_manifest(Route(hub, name), oci.parse_reference(tag))
    document = json.loads(result.content)
    if platform:
        os_, arch = platform.split("/")
        child = next(m for m in document["manifests"] if m["platform"] == {"os": os_, "architecture": arch})
        document = json.loads(manifests.get_manifest(Route(hub, name), oci.parse_reference(child["digest"])).content)
    for descriptor in [document["config"], *document["layers"]]:
        found = blobs.fetch_blob(Route(hub, name), oci.parse_digest(descriptor["digest"]))
        if isinstance(found, blobs.FillingBlob):
            b"".join(found.chunks)
    pulltimes.flush()
    return result.digest


def expire(tag_name: str) -> None:
    """As if the tag's TTL ran out long ago (a refresh runs on its own schedule)."""
    Tag.objects.filter(name=tag_name).update(validated_at=timezone.now() - timedelta(days=1))


def test_popular_tags_are_the_most_pulled_of_the_last_days(hub, store, settings):
    tags = {}
    for name in ("a", "b", "c", "d"):
        tags[name] = Tag.objects.get(manifest=cache_image(store, hub, f"library/{name}", "1", [name.encode() * 100]))
    today = timezone.now().date()
    for name, counts in {"a": [(0, 5)], "b": [(0, 2), (3, 6)], "c": [(8, 100)], "d": [(1, 1)]}.items():
        for days_ago, count in counts:
            TagPullCount.objects.create(tag=tags[name], day=today - timedelta(days=days_ago), count=count)
    # c's pulls are older than the 7 days looked at; b has 8 in the window, a 5, d 1.
    assert [str(t) for t in popular.popular_tags()] == ["library/b:1", "library/a:1", "library/d:1"]
    assert [str(t) for t in popular.popular_tags(limit=2)] == ["library/b:1", "library/a:1"]


def test_a_moved_tag_is_cached_before_any_client_asks(hub, upstream, store):
    first = push_image(upstream, "library/pop", "1", layer_sizes=[40 * KB, 20 * KB], seed=next(SEEDS))
    assert client_pull(hub, "pop", "1") == first.digest
    assert TagPullCount.objects.get().count == 1
    moved = push_image(upstream, "library/pop", "1", layer_sizes=[40 * KB, 20 * KB], seed=next(SEEDS))

    mark = upstream.log_mark()
    report = popular.refresh_popular()
    assert report.moved == ["library/pop:1"] and not report.errors
    assert report.manifests_fetched == 1
    heads = [r for r in upstream.requests_log(since=mark) if r.method == "HEAD" and "/manifests/" in r.path]
    assert len([r for r in heads if r.status == 200]) == 1, "one revalidating HEAD"
    assert Tag.objects.get(name="1").manifest.digest == moved.digest
    for blob in moved.blobs:
        assert store.size(oci.parse_digest(blob.digest)) == blob.size
    job = PrefetchJob.objects.get()
    assert (job.status, job.requested_by, job.digest) == (
        PrefetchJob.Status.SUCCEEDED,
        popular.REQUESTED_BY,
        moved.digest,
    )
    assert TagPullCount.objects.get().count == 1, "the refresh's own pull does not count"

    memory.forget_all()  # the next pull reaches a process that did not remember the old answer
    client_mark = upstream.log_mark()
    assert client_pull(hub, "pop", "1") == moved.digest
    assert [r for r in upstream.requests_log(since=client_mark) if r.method == "GET"] == []


def test_an_unchanged_tag_costs_one_head_and_is_trusted_again(hub, upstream, store):
    push_image(upstream, "library/steady", "1", layer_sizes=[10 * KB], seed=next(SEEDS))
    client_pull(hub, "steady", "1")
    expire("1")
    mark = upstream.log_mark()
    report = popular.refresh_popular()
    assert report.unchanged == ["library/steady:1"] and report.moved == []
    assert [(r.method, r.status) for r in upstream.requests_log(since=mark) if r.status != 401] == [("HEAD", 200)]
    assert timezone.now() - Tag.objects.get().validated_at < timedelta(minutes=1)
    assert not PrefetchJob.objects.exists()


def test_a_moved_index_is_refreshed_for_the_platforms_clients_pulled(hub, upstream, store):
    platforms = [("linux", "amd64"), ("linux", "arm64")]
    push_index(upstream, "library/popmulti", "1", platforms=platforms, layer_sizes=[10 * KB], seed=next(SEEDS))
    client_pull(hub, "popmulti", "1", platform="linux/arm64")
    assert popular.cached_platforms(Tag.objects.get().manifest) == [Platform("linux", "arm64")]
    moved = push_index(upstream, "library/popmulti", "1", platforms=platforms, layer_sizes=[10 * KB], seed=next(SEEDS))
    mark = upstream.log_mark()
    report = popular.refresh_popular()
    assert report.moved == ["library/popmulti:1"]
    assert Manifest.objects.filter(digest=moved.child("arm64").digest).exists()
    assert not Manifest.objects.filter(digest=moved.child("amd64").digest).exists()
    for blob in moved.child("amd64").blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 0
    for blob in moved.child("arm64").blobs:
        assert store.size(oci.parse_digest(blob.digest)) == blob.size


def test_the_budget_of_upstream_pulls_is_kept(hub, upstream, store, settings):
    for name in ("budget-a", "budget-b"):
        push_image(upstream, f"library/{name}", "1", layer_sizes=[10 * KB], seed=next(SEEDS))
        client_pull(hub, name, "1")
    client_pull(hub, "budget-a", "1")  # the most pulled: refreshed first
    for name in ("budget-a", "budget-b"):
        push_image(upstream, f"library/{name}", "1", layer_sizes=[10 * KB], seed=next(SEEDS))
    settings.MIRROR_POPULAR_BUDGET = 1
    report = popular.refresh_popular()
    assert report.moved == ["library/budget-a:1"]
    assert report.skipped == ["library/budget-b:1"]
    assert report.manifests_fetched == 1


def test_the_refresh_stops_when_the_upstream_is_down(hub, upstream, store):
    push_image(upstream, "library/down", "1", layer_sizes=[10 * KB], seed=next(SEEDS))
    client_pull(hub, "down", "1")
    Upstream.objects.filter(pk=hub.pk).update(url="http://127.0.0.1:9")
    report = popular.refresh_popular()
    assert report.stopped.startswith("upstream unavailable")
    assert report.moved == report.unchanged == []
