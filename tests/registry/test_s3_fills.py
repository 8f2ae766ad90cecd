"""Single-flight fills with blobs in object storage, where replicas share the bucket and Redis
but not their temporary files: a replica waits for another's commit, and takes a fill over
when its owner died (its Redis lock expired)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from registry import cache, locks, oci
from registry.blobstore import Redirect
from registry.models import Upstream
from registry.s3store import S3Config, S3Store
from tests.support.dashboard import wait_for
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.django_db(transaction=True)  # fills record from their own thread

REDIS_URL = "redis://127.0.0.1:6379/14"  # this suite's own database on the machine's Redis


@pytest.fixture
def redis_locks(settings, monkeypatch):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    settings.REDIS_URL = REDIS_URL
    monkeypatch.setattr(locks, "REDIS_LOCK_TTL", 1.0)  # a dead owner's lock expires quickly
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
    filling = cache.fetch_blob(hub, "library/big", digest, first)
    assert isinstance(filling, cache.FillingBlob), "the first replica fills"
    assert second.size(digest) is None, "not committed yet when the other replica asks"
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(cache.fetch_blob, hub, "library/big", digest, second)
        assert b"".join(filling.chunks) == layer.data
        served = waiting.result(timeout=60)
    assert isinstance(served, cache.CachedBlob) and isinstance(served.location, Redirect)
    assert served.size == layer.size
    assert upstream.blob_gets(layer.digest, since=mark) == 1


def test_replica_takes_over_a_fill_whose_owner_died(redis_locks, settings, s3_server, hub, upstream, images, tmp_path):
    store = replica_store(settings, s3_server, s3_server.create_bucket("fills"), tmp_path / "a")
    layer = images.big.layers[1]
    digest = oci.parse_digest(layer.digest)
    # Another replica took the fill and died: its lock stays until it expires, and its
    # temporary file and sidecar were never this replica's to see.
    dead_owner = locks.named_lock(f"fill:{digest}")
    assert dead_owner.try_acquire()
    mark = upstream.log_mark()
    found = cache.fetch_blob(hub, "library/big", digest, store)
    assert isinstance(found, cache.FillingBlob), "this replica fills once the lock expired"
    assert b"".join(found.chunks) == layer.data
    # The client may have it all before the upload completes.
    assert wait_for(lambda: store.size(digest), lambda size: size == layer.size) == layer.size
    assert upstream.blob_gets(layer.digest, since=mark) == 1
