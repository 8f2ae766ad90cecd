"""The S3 blob store against a real S3-compatible server (moto, on loopback): objects appear
only after verification, every failure leaves nothing visible, garbage collection aborts
abandoned uploads and deletes evicted objects, hits are served by presigned URL or stream."""

from __future__ import annotations

import hashlib
import os
import threading
import time

from botocore.exceptions import EndpointConnectionError
from django.core.exceptions import ImproperlyConfigured
import pytest
import requests

from registry import oci
from registry.jobs import gc
from registry.models import Upstream
from registry.storage import blobstore, default_store, locks
from registry.storage.blobstore import DigestMismatch, Redirect, StorageUnavailable, Streamed
from registry.storage.s3 import S3Config, S3Store
from tests.registry.cachestate import blob_digests, cache_image
from tests.support.dashboard import wait_for
from tests.support.s3_server import PART_SIZE, S3Server
from tests.support.upstream_registry import free_port

MB = 1024 * 1024


def digest_of(content: bytes) -> oci.Digest:
    return oci.parse_digest("sha256:" + hashlib.sha256(content).hexdigest())


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket("unit")


@pytest.fixture
def s3_settings(settings, s3_server: S3Server, bucket: str, tmp_path):
    settings.MIRROR_DATA_DIR = tmp_path
    s3_server.configure(settings, bucket, MIRROR_S3_PREFIX="mirror/", MIRROR_S3_SERVE="redirect")
    return settings


@pytest.fixture
def store(s3_settings) -> S3Store:
    return S3Store(S3Config.from_settings())


def write_in_chunks(fill, content: bytes, chunk: int = MB) -> None:
    for start in range(0, len(content), chunk):
        fill.write(content[start : start + chunk])


def test_factory_picks_the_configured_store(s3_settings, tmp_path):
    assert isinstance(default_store(), S3Store)
    s3_settings.MIRROR_STORAGE = "filesystem"
    assert isinstance(default_store(), blobstore.FilesystemStore)
    s3_settings.MIRROR_STORAGE = "tape"
    with pytest.raises(ImproperlyConfigured):
        default_store()
    s3_settings.MIRROR_STORAGE = "s3"
    s3_settings.MIRROR_S3_PART_SIZE = MB  # below S3's minimum part
    with pytest.raises(ImproperlyConfigured):
        default_store()


def test_multipart_fill_is_visible_only_after_commit(store, s3_server, bucket):
    content = os.urandom(2 * PART_SIZE + 123_456)
    digest = digest_of(content)
    key = f"mirror/blobs/sha256/{digest.encoded[:2]}/{digest.encoded}"
    fill = store.begin_fill(digest, len(content))
    write_in_chunks(fill, content)
    # Two parts are uploaded already, and still nothing is visible.
    assert s3_server.uploads(bucket) == [key]
    assert store.size(digest) is None
    assert s3_server.keys(bucket) == {}
    fill.commit()
    assert s3_server.keys(bucket) == {key: len(content)}
    assert s3_server.uploads(bucket) == []
    assert store.size(digest) == len(content)
    assert b"".join(store.read(digest)) == content
    assert b"".join(store.read(digest, len(content) - 1000)) == content[-1000:]
    assert list(store.tmp_dir.iterdir()) == []
    assert store.stored_sizes() == {str(digest): len(content)}


def test_parts_upload_while_the_fill_goes_on(store, s3_server, bucket, monkeypatch):
    content = os.urandom(3 * PART_SIZE + MB)
    digest = digest_of(content)
    key = f"mirror/blobs/sha256/{digest.encoded[:2]}/{digest.encoded}"
    sending = threading.Event()
    upload_part = store.client.upload_part

    def held_part(**request):
        assert sending.wait(60)
        return upload_part(**request)

    monkeypatch.setattr(store.client, "upload_part", held_part)
    fill = store.begin_fill(digest, len(content))
    # Three parts' worth written while no part could go up: writing never waits for uploads.
    write_in_chunks(fill, content[: 3 * PART_SIZE])
    assert s3_server.parts(bucket, key) == []
    sending.set()
    # The parts go up while the fill is still open, before its last bytes arrive.
    assert wait_for(lambda: s3_server.parts(bucket, key), lambda numbers: numbers == [1, 2, 3]) == [1, 2, 3]
    assert store.size(digest) is None
    write_in_chunks(fill, content[3 * PART_SIZE :])
    fill.commit()
    assert s3_server.keys(bucket) == {key: len(content)}
    assert b"".join(store.read(digest)) == content
    assert list(store.tmp_dir.iterdir()) == []


def test_failed_part_fails_the_fill_and_aborts_the_upload(store, s3_server, bucket, monkeypatch):
    content = os.urandom(3 * PART_SIZE + MB)
    digest = digest_of(content)
    upload_part = store.client.upload_part

    def failing_part(**request):
        if request["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return upload_part(**request)

    monkeypatch.setattr(store.client, "upload_part", failing_part)
    fill = store.begin_fill(digest, len(content))
    with pytest.raises(EndpointConnectionError):  # while writing, or at the latest on commit
        write_in_chunks(fill, content)
        fill.commit()
    fill.abort()  # what the fill thread does with any error
    assert s3_server.keys(bucket) == {}
    assert s3_server.uploads(bucket) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_small_blob_is_one_upload_after_verification(store, s3_server, bucket):
    content = b"a config blob"
    digest = digest_of(content)
    fill = store.begin_fill(digest, len(content))
    fill.write(content)
    assert store.size(digest) is None
    fill.commit()
    assert store.size(digest) == len(content)
    assert s3_server.uploads(bucket) == []


def test_wrong_digest_aborts_the_upload(store, s3_server, bucket):
    content = os.urandom(PART_SIZE + MB)
    digest = digest_of(content)
    fill = store.begin_fill(digest, len(content))
    write_in_chunks(fill, os.urandom(len(content)))  # the right size, the wrong bytes
    assert len(s3_server.uploads(bucket)) == 1
    with pytest.raises(DigestMismatch):
        fill.commit()
    assert store.size(digest) is None
    assert s3_server.keys(bucket) == {}
    assert s3_server.uploads(bucket) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_too_many_bytes_abort_the_upload(store, s3_server, bucket):
    content = os.urandom(PART_SIZE + MB)
    fill = store.begin_fill(digest_of(content), expected_size=PART_SIZE)
    with pytest.raises(DigestMismatch):
        write_in_chunks(fill, content)
    fill.abort()
    assert s3_server.keys(bucket) == {}
    assert s3_server.uploads(bucket) == []


@pytest.mark.django_db
def test_interrupted_fill_stays_invisible_and_gc_aborts_only_abandoned_uploads(store, s3_settings, s3_server, bucket):
    s3_settings.MIRROR_FILL_TIMEOUT = 1
    s3_settings.MIRROR_GC_TEMP_FILE_AGE = 1
    dead_content = os.urandom(PART_SIZE + MB)
    dead = store.begin_fill(digest_of(dead_content), len(dead_content))
    write_in_chunks(dead, dead_content[: PART_SIZE + MB // 2])  # then its process is killed
    assert store.size(dead.digest) is None
    assert s3_server.keys(bucket) == {}
    time.sleep(2.5)  # the dead upload is now older than any fill may take

    # A fill in progress holds its digest's lock, as fills.py does.
    live_content = os.urandom(PART_SIZE + MB)
    live_lock = locks.named_lock(f"fill:{digest_of(live_content)}")
    assert live_lock.try_acquire()
    live = store.begin_fill(digest_of(live_content), len(live_content))
    write_in_chunks(live, live_content[:PART_SIZE])
    assert sorted(s3_server.uploads(bucket)) == sorted([store.key(dead.digest), store.key(live.digest)])

    os.utime(live.temp_path)  # a live fill keeps writing (on a loaded machine the part upload can outlast the age)
    plan = gc.plan(store)
    # (moto reports one fixed initiation time for every upload, so both look old here; on S3
    # the live one is also too young. Either way its lock keeps it.)
    assert store.key(dead.digest) in [upload.key for upload in plan.uploads]
    assert {upload.size for upload in plan.uploads} == {PART_SIZE}
    live.write(live_content[PART_SIZE : PART_SIZE + 1])  # still writing, however long planning took
    freed = gc.apply(plan, store)
    # The dead fill's local temporary file goes too; the live one's stays.
    assert freed.temp_files == 2 and freed.temp_bytes == (PART_SIZE + MB // 2) + PART_SIZE
    assert not dead.temp_path.exists() and live.temp_path.exists()
    assert s3_server.uploads(bucket) == [store.key(live.digest)]
    assert s3_server.keys(bucket) == {}

    write_in_chunks(live, live_content[PART_SIZE + 1 :])
    live.commit()  # the live fill was left alone and completes
    live_lock.release()
    assert store.size(live.digest) == len(live_content)


@pytest.mark.django_db
def test_gc_deletes_evicted_objects(store, s3_settings, s3_server, bucket):
    s3_settings.MIRROR_CACHE_TTL = 7 * 24 * 3600
    s3_settings.MIRROR_CACHE_MAX_BYTES = 0
    s3_settings.MIRROR_GC_GRACE_PERIOD = 3600
    s3_settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    hub = Upstream.objects.default()
    old = cache_image(store, hub, "library/old", "1", [b"old layer" * 1000], days_ago=8)
    fresh = cache_image(store, hub, "library/fresh", "1", [b"fresh layer" * 1000], days_ago=1)
    old_blobs, fresh_blobs = blob_digests(old), blob_digests(fresh)
    assert len(s3_server.keys(bucket, prefix="mirror/blobs/")) == len(old_blobs) + len(fresh_blobs)
    plan, run = gc.collect(store=store)
    assert run.blobs_deleted == len(old_blobs)
    remaining = set(s3_server.keys(bucket, prefix="mirror/blobs/"))
    assert remaining == {store.key(oci.parse_digest(d)) for d in fresh_blobs}


def test_redirect_location_is_a_presigned_get_that_serves_ranges(store):
    content = os.urandom(300_000)
    digest = digest_of(content)
    fill = store.begin_fill(digest, len(content))
    fill.write(content)
    fill.commit()
    location = store.location(digest)
    assert isinstance(location, Redirect)
    assert "X-Amz-Signature=" in location.url
    whole = requests.get(location.url, timeout=10)
    assert whole.status_code == 200 and whole.content == content
    part = requests.get(location.url, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert part.status_code == 206 and part.content == content[1000:2000]


def test_stream_location_reads_windows_and_says_when_gone(store, s3_settings):
    s3_settings.MIRROR_S3_SERVE = "stream"
    streaming = S3Store(S3Config.from_settings())
    content = os.urandom(300_000)
    digest = digest_of(content)
    fill = streaming.begin_fill(digest, len(content))
    fill.write(content)
    fill.commit()
    location = streaming.location(digest)
    assert isinstance(location, Streamed)
    assert location.open(1000, 1000).read() == content[1000:2000]
    streaming.delete(digest)
    assert streaming.size(digest) is None
    with pytest.raises(FileNotFoundError):
        location.open(0, 10)


def test_probe_writes_and_deletes(store, s3_settings, s3_server, bucket):
    store.probe()
    assert s3_server.keys(bucket) == {}, "the probe object is deleted"
    s3_settings.MIRROR_S3_BUCKET = "no-such-bucket"
    elsewhere = S3Store(S3Config.from_settings())
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        elsewhere.probe()
    s3_settings.MIRROR_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = S3Store(S3Config.from_settings())
    with pytest.raises(StorageUnavailable, match="EndpointConnectionError"):  # UNAVAILABLE (503) for clients
        unreachable.size(digest_of(b"anything"))


@pytest.mark.django_db
def test_readiness_checks_the_bucket(client, s3_settings):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["storage"] == "ok"
    s3_settings.MIRROR_S3_BUCKET = "no-such-bucket"
    unready = client.get("/readyz")
    assert unready.status_code == 503
    assert unready.json()["checks"]["storage"] == "error: bucket: NoSuchBucket"


def test_parts_grow_for_a_blob_that_would_need_more_than_s3_allows(store):
    huge = 20_000 * PART_SIZE  # announced by the upstream; nothing that large is written here
    fill = store.begin_fill(digest_of(b"huge"), expected_size=huge)
    assert fill.part_size * 10_000 >= huge and fill.part_size >= 2 * PART_SIZE
    fill.abort()
    small = store.begin_fill(digest_of(b"small"), expected_size=MB)
    assert small.part_size == PART_SIZE
    small.abort()
