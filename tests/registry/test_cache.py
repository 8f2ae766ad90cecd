"""The pull-through logic, called directly (no HTTP in front), against the real upstream."""

from __future__ import annotations

from datetime import timedelta
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading
import time

from django.utils import timezone
import pytest

from registry import memory, oci
from registry.models import Blob, Manifest, ManifestReference, Repository, RepositoryBlob, Tag, Upstream
from registry.proxy import blobs, fills, listings, manifests, pulltimes
from registry.storage.blobstore import BlobStore, FilesystemStore
from registry.upstreams.routing import Route
from tests.registry.cachestate import count_manifest_parses
from tests.support.fake_registry import FakeRegistry, corrupt_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    return FilesystemStore(tmp_path)


@pytest.fixture
def mirror_of(settings, store):
    """Make an Upstream record for a URL, with the session's upstream account configured."""
    settings.MIRROR_TAG_TTL = 3600
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 1
    settings.MIRROR_UPSTREAM_READ_TIMEOUT = 5

    def make(url: str, username: str = "", password: str = "") -> Upstream:
        settings.REGISTRY_PROXY_USERNAME = username
        settings.REGISTRY_PROXY_PASSWORD = password
        return Upstream.objects.create(name=f"u{Upstream.objects.count()}", url=url, library_prefix=True)

    return make


@pytest.fixture
def hub(mirror_of, upstream) -> Upstream:
    return mirror_of(upstream.url, upstream.username, upstream.password)


def drain(found) -> bytes:
    if isinstance(found, blobs.CachedBlob):
        return found.location.path.read_bytes()
    return b"".join(found.chunks)


def expire_tags() -> None:
    """Make every cached tag older than its TTL (in the database and in this process)."""
    Tag.objects.update(validated_at=timezone.now() - timedelta(hours=2))
    memory.forget_all()


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def serve_on_loopback(handler: type[BaseHTTPRequestHandler]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_tag_is_cached_with_its_references_and_trusted_for_the_ttl(hub, upstream, images):
    small = images.small
    result = manifests.get_manifest(Route(hub, "small"), oci.parse_reference("1"))
    assert (result.digest, result.content, result.media_type) == (small.digest, small.manifest, small.media_type)
    manifest = Manifest.objects.get(digest=small.digest)
    assert manifest.repository.name == "library/small"
    assert set(ManifestReference.objects.filter(manifest=manifest).values_list("digest", flat=True)) == {
        b.digest for b in small.blobs
    }
    assert set(RepositoryBlob.objects.filter(repository=manifest.repository).values_list("digest", flat=True)) == {
        b.digest for b in small.blobs
    }
    mark = upstream.log_mark()
    again = manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    assert again.content == small.manifest and again.stale_reason is None
    assert upstream.access_log(since=mark) == [], "within the TTL the tag is served with no upstream contact"


def test_expired_tag_is_revalidated_with_one_head(hub, upstream, images, settings):
    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    expire_tags()
    mark = upstream.log_mark()
    result = manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    assert result.digest == images.small.digest
    served = [(r.method, r.path) for r in upstream.requests_log(since=mark) if r.status != 401]
    assert served == [("HEAD", "/v2/library/small/manifests/1")]
    assert Tag.objects.get().validated_at > timezone.now() - timedelta(minutes=1)


def test_manifest_by_digest_is_immutable_and_served_without_upstream(hub, upstream, images):
    child = images.multi.child("arm64")
    first = manifests.get_manifest(Route(hub, "library/multi"), oci.parse_reference(child.digest))
    assert first.content == child.manifest
    mark = upstream.log_mark()
    assert (
        manifests.get_manifest(Route(hub, "library/multi"), oci.parse_reference(child.digest)).content == child.manifest
    )
    assert upstream.access_log(since=mark) == []


def test_unknown_tag_and_repository(hub, images):
    with pytest.raises(oci.ManifestUnknown):
        manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("nope"))
    with pytest.raises(oci.NameUnknown):
        listings.list_tags(Route(hub, "library/never-existed"), None, None)
    assert not Manifest.objects.exists()


def test_stale_tag_served_when_upstream_unreachable_within_max_staleness(hub, images, settings):
    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    expire_tags()
    Upstream.objects.filter(pk=hub.pk).update(url="http://127.0.0.1:9")
    hub.refresh_from_db()
    result = manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    assert result.digest == images.small.digest
    assert result.stale_reason
    settings.MIRROR_TAG_MAX_STALENESS = 3600
    with pytest.raises(oci.Unavailable):
        manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))


@pytest.mark.parametrize("status,served_stale", [(429, True), (503, True), (404, False)])
def test_revalidation_answers(mirror_of, hub, images, status, served_stale):
    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    expire_tags()
    methods: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            methods.append("HEAD")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            methods.append("GET")
            self.do_HEAD()

    server = serve_on_loopback(Handler)
    try:
        Upstream.objects.filter(pk=hub.pk).update(url=f"http://127.0.0.1:{server.server_port}")
        hub.refresh_from_db()
        if served_stale:
            assert manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1")).stale_reason
        else:  # the upstream says the tag is gone: that is an answer, not an outage
            with pytest.raises(oci.ManifestUnknown):
                manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    finally:
        server.shutdown()
    assert methods == ["HEAD"], "a failed HEAD is never retried as a GET"


def test_manifest_not_matching_its_digest_is_rejected(mirror_of):
    wrong = b'{"schemaVersion": 2, "layers": []}'
    asked_for = "sha256:" + hashlib.sha256(b"something else").hexdigest()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", oci.OCI_MANIFEST)
            self.send_header("Docker-Content-Digest", asked_for)
            self.send_header("Content-Length", str(len(wrong)))
            self.end_headers()
            self.wfile.write(wrong)

    server = serve_on_loopback(Handler)
    try:
        liar = mirror_of(f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(oci.ManifestInvalid):
            manifests.get_manifest(Route(liar, "library/x"), oci.parse_reference(asked_for))
        with pytest.raises(oci.ManifestInvalid):
            manifests.get_manifest(Route(liar, "library/x"), oci.parse_reference("latest"))
    finally:
        server.shutdown()
    assert not Manifest.objects.exists() and not Tag.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_blob_miss_streams_fills_and_then_hits(hub, upstream, images, store):
    layer = images.big.layers[0]
    digest = oci.parse_digest(layer.digest)
    found = blobs.fetch_blob(Route(hub, "library/big"), digest, store)
    assert isinstance(found, blobs.FillingBlob)
    assert found.size == layer.size
    assert drain(found) == layer.data
    assert Blob.objects.get(digest=layer.digest).size == layer.size, "recorded before the last byte is sent"
    mark = upstream.log_mark()
    hit = blobs.fetch_blob(Route(hub, "library/big"), digest, store)
    assert isinstance(hit, blobs.CachedBlob) and drain(hit) == layer.data
    assert upstream.access_log(since=mark) == []
    assert blobs.stat_blob(Route(hub, "library/big"), digest, store) == layer.size
    assert upstream.access_log(since=mark) == []


@pytest.mark.django_db(transaction=True)
def test_fill_outlives_a_client_that_goes_away(hub, images, store):
    layer = images.big.layers[-1]
    digest = oci.parse_digest(layer.digest)
    found = blobs.fetch_blob(Route(hub, "library/big"), digest, store)
    next(found.chunks)
    found.chunks.close()  # what the WSGI server does when the client disconnects
    # Done: the blob recorded, then its fill's files removed (the sidecar goes last).
    wait_for(lambda: Blob.objects.filter(digest=layer.digest).exists())
    wait_for(lambda: [p for p in store.tmp_dir.iterdir() if p.is_file()] == [])
    assert store.path(digest).read_bytes() == layer.data


@pytest.mark.django_db(transaction=True)
def test_large_corrupt_blob_is_cut_short_and_never_stored(mirror_of, store):
    image = corrupt_image(layer_size=3 * 1024 * 1024)
    layer = image.layers[0]
    with FakeRegistry() as fake:
        fake.serve(image.repository, image, corrupt=[layer.digest])
        liar = mirror_of(fake.url)
        digest = oci.parse_digest(layer.digest)
        found = blobs.fetch_blob(Route(liar, "library/bad"), digest, store)
        received = b""
        with pytest.raises(fills.UpstreamDigestMismatch):
            for chunk in found.chunks:
                received += chunk
        assert 0 < len(received) < layer.size, "the client got a truncated body, never a complete wrong one"
        assert store.size(digest) is None
        assert [p.suffix for p in store.tmp_dir.iterdir() if p.is_file()] in ([], [".fill"]), "no partial blob"
        assert not Blob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_blob_of_another_repository_needs_upstream_confirmation(hub, upstream, images, store):
    layer = images.small.layers[0]
    digest = oci.parse_digest(layer.digest)
    drain(blobs.fetch_blob(Route(hub, "library/small"), digest, store))
    with pytest.raises(oci.BlobUnknown):
        blobs.fetch_blob(Route(hub, "library/big"), digest, store)
    with pytest.raises(oci.BlobUnknown):
        blobs.stat_blob(Route(hub, "library/big"), digest, store)
    # Where the upstream has it too, the cached bytes are served after a HEAD, not a download.
    from tests.support.images import push_built

    push_built(upstream, images.small.__class__(**{**images.small.__dict__, "repository": "library/copy"}))
    mark = upstream.log_mark()
    found = blobs.fetch_blob(Route(hub, "library/copy"), digest, store)
    assert isinstance(found, blobs.CachedBlob) and drain(found) == layer.data
    assert {r.method for r in upstream.requests_log(since=mark) if r.status != 401} == {"HEAD"}


def test_head_of_uncached_blob_downloads_nothing(hub, images, store):
    layer = images.big.layers[1]
    assert blobs.stat_blob(Route(hub, "library/big"), oci.parse_digest(layer.digest), store) == layer.size
    assert store.size(oci.parse_digest(layer.digest)) is None


def test_pull_times_are_buffered_then_flushed(hub, images, settings):
    settings.MIRROR_PULL_TIME_FLUSH_INTERVAL = 3600
    pulltimes.flush()
    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    tag = Tag.objects.get()
    assert tag.last_pulled_at is None, "no database write per hit"
    pulltimes.flush()
    tag.refresh_from_db()
    assert tag.last_pulled_at is not None
    assert Manifest.objects.get().last_pulled_at is not None


def test_tags_are_listed_sorted_and_paginated(hub, images):
    page = listings.list_tags(Route(hub, "library/small"), None, None)
    assert page.tags == sorted(page.tags) and "1" in page.tags
    first = listings.list_tags(Route(hub, "library/small"), 1, None)
    assert len(first.tags) == 1
    if len(page.tags) > 1:
        assert first.next_last == first.tags[0]
    assert Repository.objects.count() == 0, "listing tags caches nothing"


def test_moved_tag_whose_new_manifest_cannot_be_fetched_is_served_stale(hub, images):
    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    expire_tags()
    moved_to = "sha256:" + "c" * 64

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Docker-Content-Digest", moved_to)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = serve_on_loopback(Handler)
    try:
        Upstream.objects.filter(pk=hub.pk).update(url=f"http://127.0.0.1:{server.server_port}")
        hub.refresh_from_db()
        result = manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    finally:
        server.shutdown()
    assert result.digest == images.small.digest and result.stale_reason
    assert Tag.objects.get().manifest.digest == images.small.digest


def test_changing_the_default_upstream_starts_a_separate_cache(settings, upstream, images, store):
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    first = Upstream.objects.default()
    assert Upstream.objects.default() == first
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    second = Upstream.objects.default()
    assert second != first and second.url == "http://127.0.0.1:9"


@pytest.mark.django_db(transaction=True)
def test_concurrent_revalidations_of_one_tag_send_one_head(hub, upstream, images):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1"))
    expire_tags()
    mark = upstream.log_mark()

    def pull(_: int) -> str:
        try:
            return manifests.get_manifest(Route(hub, "library/small"), oci.parse_reference("1")).digest
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(pull, range(8)))
    assert digests == [images.small.digest] * 8
    asked = [(r.method, r.path) for r in upstream.requests_log(since=mark) if r.status != 401]
    assert asked == [("HEAD", "/v2/library/small/manifests/1")]


def test_a_fill_parses_the_manifest_once_and_hands_the_parse_on(hub, images, monkeypatch):
    parsed = count_manifest_parses(monkeypatch)
    result = manifests.get_manifest(Route(hub, "small"), oci.parse_reference("1"))
    assert parsed == [images.small.manifest], "media type, references and sizes from one parse"
    assert result.document.references()[0] == [b.digest for b in images.small.blobs]
    assert len(parsed) == 1, "the result carries the fill's parse"
    again = manifests.get_manifest(Route(hub, "small"), oci.parse_reference("1"))
    assert again.parsed is None and len(parsed) == 1, "an answer from the cache is parsed only when asked"
