"""Single-flight fills with blobs in object storage, where replicas share the bucket and Redis
but not their temporary files: a replica waits for another's commit, and takes a fill over
when its owner died (its Redis lock expired). On the filling replica, followers get the end of
a verified blob from the temporary file while the upload completes; the blob is recorded only
once it is in the bucket."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
import threading

from botocore.exceptions import EndpointConnectionError
import pytest

from registry import oci
from registry.models import Blob, Upstream
from registry.proxy import blobs, fills
from registry.storage import locks
from registry.storage.blobstore import Redirect
from registry.storage.s3 import S3Config, S3Store
from registry.upstreams.routing import Route
from tests.support.dashboard import wait_for
from tests.support.fake_registry import FakeRegistry, corrupt_image
from tests.support.fault_proxy import FaultProxy
from tests.support.s3_server import PART_SIZE

pytestmark = pytest.mark.django_db(transaction=True)  # fills record from their own thread

REDIS_URL = "redis://127.0.0.1:6379/14"  # this suite's own database on the machine's Redis


@pytest.fixture
def redis_locks(settings):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    settings.REDIS_URL = REDIS_URL
    settings.MIRROR_LOCK_TTL = 3.0  # a dead owner's lock expires quickly; a live one renews well within it
    locks._redis_client = None
    yield
    locks._redis_client = None
    redis.Redis.from_url(REDIS_URL).flushdb()


def replica_store(settings, s3_server, bucket: str, data_dir) -> S3Store:
    """The store as one replica has it: the shared bucket, a data directory of its own."""
    settings.MIRROR_DATA_DIR = data_dir
    s3_server.configure(settings, bucket, MIRROR_S3_PREFIX="fills")
    return S3Store(S3Config.from_settings())


@pytest.fixture
def proxy(upstream) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(upstream.url).start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture
def hub(settings, upstream, proxy) -> Upstream:
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = upstream.username, upstream.password
    settings.MIRROR_UPSTREAM_READ_TIMEOUT = 5
    return Upstream.objects.create(name="hub", url=proxy.url, library_prefix=True)


def test_replica_waits_for_another_replicas_commit_then_serves_the_object(
    redis_locks, settings, s3_server, hub, proxy, upstream, images, tmp_path
):
    bucket = s3_server.create_bucket("fills")
    first = replica_store(settings, s3_server, bucket, tmp_path / "a")
    second = replica_store(settings, s3_server, bucket, tmp_path / "b")
    layer = images.big.layers[2]
    digest = oci.parse_digest(layer.digest)
    mark = upstream.log_mark()
    proxy.bytes_per_second = 8 * 1024 * 1024  # the fill takes about a second
    filling = blobs.fetch_blob(Route(hub, "library/big"), digest, first)
    assert isinstance(filling, blobs.FillingBlob), "the first replica fills"
    assert second.size(digest) is None, "not committed yet when the other replica asks"
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(blobs.fetch_blob, Route(hub, "library/big"), digest, second)
        assert b"".join(filling.chunks) == layer.data
        served = waiting.result(timeout=60)
    assert isinstance(served, blobs.CachedBlob) and isinstance(served.location, Redirect)
    assert served.size == layer.size
    assert upstream.blob_gets(layer.digest, since=mark) == 1


def test_replica_takes_over_a_fill_whose_owner_died(redis_locks, settings, s3_server, hub, upstream, images, tmp_path):
    store = replica_store(settings, s3_server, s3_server.create_bucket("fills"), tmp_path / "a")
    layer = images.big.layers[1]
    digest = oci.parse_digest(layer.digest)
    # Another replica took the fill and died: its lock stays until it expires, and its
    # temporary file and sidecar were never this replica's to see.
    # Its lock on its own machine died with it; only its Redis lock is left, here.
    dead_owner = locks.named_lock(f"fill:{digest}").shared
    assert dead_owner.try_acquire()
    mark = upstream.log_mark()
    found = blobs.fetch_blob(Route(hub, "library/big"), digest, store)
    assert isinstance(found, blobs.FillingBlob), "this replica fills once the lock expired"
    assert b"".join(found.chunks) == layer.data
    # The client may have it all before the upload completes.
    assert wait_for(lambda: store.size(digest), lambda size: size == layer.size) == layer.size
    assert upstream.blob_gets(layer.digest, since=mark) == 1


@pytest.fixture
def local_store(settings, s3_server, tmp_path) -> S3Store:
    """One replica, its fills' locks in local files."""
    settings.REDIS_URL = ""
    locks._redis_client = None
    return replica_store(settings, s3_server, s3_server.create_bucket("fills"), tmp_path / "a")


class HeldCompletion:
    """The store's CompleteMultipartUpload, held until released, then done (or failed)."""

    def __init__(self, monkeypatch, store: S3Store, fail: bool):
        self.called, self.released = threading.Event(), threading.Event()
        complete = store.client.complete_multipart_upload

        def held(**request):
            self.called.set()
            assert self.released.wait(60)
            if fail:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
            return complete(**request)

        monkeypatch.setattr(store.client, "complete_multipart_upload", held)


@pytest.mark.parametrize("completes", [True, False], ids=["upload-completes", "upload-fails"])
def test_followers_get_the_verified_blob_before_the_upload_completes(
    local_store, monkeypatch, s3_server, hub, images, caplog, completes
):
    layer = images.big.layers[1]  # two parts
    digest = oci.parse_digest(layer.digest)
    completion = HeldCompletion(monkeypatch, local_store, fail=not completes)
    found = blobs.fetch_blob(Route(hub, "library/big"), digest, local_store)
    assert isinstance(found, blobs.FillingBlob)
    assert b"".join(found.chunks) == layer.data
    assert completion.called.wait(30)
    # The client has every verified byte; the bucket has no object yet, nor the database a row.
    assert local_store.size(digest) is None
    assert s3_server.keys(local_store.config.bucket) == {}
    assert not Blob.objects.filter(digest=layer.digest).exists()
    # A client that comes now follows the same fill, and reads the same verified file.
    again = blobs.fetch_blob(Route(hub, "library/big"), digest, local_store)
    assert isinstance(again, blobs.FillingBlob) and b"".join(again.chunks) == layer.data
    completion.released.set()
    if completes:
        assert wait_for(lambda: Blob.objects.filter(digest=layer.digest).exists(), bool)
        assert local_store.size(digest) == layer.size
    else:
        sidecar = fills.Sidecar(local_store, digest)
        assert wait_for(sidecar.read, lambda state: state is not None and state.failed == "upstream")
        assert local_store.size(digest) is None
        assert s3_server.uploads(local_store.config.bucket) == [], "the upload was aborted"
        assert not Blob.objects.filter(digest=layer.digest).exists()
        assert f"verified blob {digest} could not be stored" in caplog.text
    assert [p for p in local_store.tmp_dir.iterdir() if p.suffix == ".partial"] == []


def test_failed_part_upload_ends_followers_cleanly(local_store, monkeypatch, s3_server, hub, proxy, images):
    layer = images.big.layers[4]  # two full parts and a last one
    digest = oci.parse_digest(layer.digest)
    proxy.bytes_per_second = 8 * 1024 * 1024  # the first part fails while most bytes are still to come
    upload_part = local_store.client.upload_part

    def failing_part(**request):
        if request["PartNumber"] == 1:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return upload_part(**request)

    monkeypatch.setattr(local_store.client, "upload_part", failing_part)
    found = blobs.fetch_blob(Route(hub, "library/big"), digest, local_store)
    received = b""
    with pytest.raises(fills.FillFailed):
        for chunk in found.chunks:
            received += chunk
    assert len(received) < layer.size and layer.data.startswith(received)
    assert s3_server.keys(local_store.config.bucket) == {}
    assert s3_server.uploads(local_store.config.bucket) == []
    assert not Blob.objects.filter(digest=layer.digest).exists()
    assert [p for p in local_store.tmp_dir.iterdir() if p.suffix == ".partial"] == []


def test_wrong_bytes_never_release_the_end(local_store, settings, s3_server):
    settings.REGISTRY_PROXY_USERNAME = settings.REGISTRY_PROXY_PASSWORD = ""
    image = corrupt_image(layer_size=2 * PART_SIZE + 1000)
    layer = image.layers[0]
    with FakeRegistry() as fake:
        fake.serve(image.repository, image, corrupt=[layer.digest])
        liar = Upstream.objects.create(name="liar", url=fake.url, library_prefix=True)
        digest = oci.parse_digest(layer.digest)
        found = blobs.fetch_blob(Route(liar, "library/bad"), digest, local_store)
        received = b""
        with pytest.raises(fills.UpstreamDigestMismatch):
            for chunk in found.chunks:
                received += chunk
        assert len(received) <= layer.size - fills.HOLD_BACK, "the held-back end was never sent"
        assert s3_server.keys(local_store.config.bucket) == {}
        assert s3_server.uploads(local_store.config.bucket) == []
        assert not Blob.objects.exists()


def test_a_follower_that_read_the_verified_file_to_its_end_ends_cleanly_after_the_commit(
    local_store, monkeypatch, s3_server, hub, images
):
    """Its last bytes came from the verified temporary file; the upload then completes before
    the follower looks again: it has nothing left to ask the bucket for (a range from the
    object's size would be InvalidRange) and ends as a whole answer, not an error."""
    layer = images.big.layers[2]  # a multipart upload, whose completion is held
    digest = oci.parse_digest(layer.digest)
    completion = HeldCompletion(monkeypatch, local_store, fail=False)
    found = blobs.fetch_blob(Route(hub, "library/big"), digest, local_store)
    assert isinstance(found, blobs.FillingBlob)
    chunks = iter(found.chunks)
    received = b""
    while len(received) < layer.size:
        received += next(chunks)
    assert received == layer.data
    completion.released.set()
    assert wait_for(lambda: local_store.size(digest), lambda size: size == layer.size)
    assert completion.called.is_set()
    assert wait_for(lambda: fills.Sidecar(local_store, digest).read() is None, bool), "the fill has finished"
    assert list(chunks) == []
