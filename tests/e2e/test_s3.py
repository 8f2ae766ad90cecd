"""The mirror with its blobs in S3-compatible object storage (a moto server on loopback):
skopeo pulls with hits redirected to presigned URLs or streamed through the mirror, ranges in
both modes, fills that die midway leaving nothing visible, and single-flight across replicas
that share only the bucket and Redis."""

from __future__ import annotations

from collections.abc import Iterator
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.test_pull import copy, dir_blobs
from tests.e2e.test_single_flight import assert_pulled_correctly, concurrent_skopeo_pulls
from tests.support.accesslog import AccessLog
from tests.support.dashboard import wait_for
from tests.support.images import PushedImage, push_image
from tests.support.mirror import PROJECT_ROOT, MirrorProcess
from tests.support.s3_server import S3Server

MB = 1024 * 1024
# This module's own Redis database: the replicas' locks meet nothing else there.
REDIS_URL = "redis://127.0.0.1:6379/14"

_seeds = itertools.count(8100)


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket("e2e")


def s3_mirror_process(
    tmp_path_factory, name: str, upstream_url: str, upstream, s3_server, bucket, database=None, **env
) -> MirrorProcess:
    return MirrorProcess(
        tmp_path_factory.mktemp(name) / "data",
        upstream_url,
        database=database,
        username=upstream.username,
        password=upstream.password,
        **s3_server.mirror_env(bucket, **env),
    )


@pytest.fixture(scope="module")
def redirecting(proxy, upstream, s3_server, bucket, tmp_path_factory) -> Iterator[MirrorProcess]:
    """Hits answered with a redirect to the bucket (the default)."""
    process = s3_mirror_process(
        tmp_path_factory, "s3-redirect", proxy.url, upstream, s3_server, bucket, MIRROR_S3_PREFIX="redirect"
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def streaming(upstream, s3_server, bucket, tmp_path_factory) -> Iterator[MirrorProcess]:
    """Hits read from the bucket and sent by the mirror."""
    process = s3_mirror_process(
        tmp_path_factory,
        "s3-stream",
        upstream.url,
        upstream,
        s3_server,
        bucket,
        MIRROR_S3_PREFIX="stream",
        MIRROR_S3_SERVE="stream",
    ).start()
    yield process
    process.stop()


def fresh_image(upstream, layer_sizes: list[int]) -> PushedImage:
    seed = next(_seeds)
    return push_image(upstream, f"s3/img{seed}", "1", layer_sizes=layer_sizes, seed=seed)


def blob_key(prefix: str, digest: str) -> str:
    algorithm, encoded = digest.split(":")
    return f"{prefix}/blobs/{algorithm}/{encoded[:2]}/{encoded}"


def blob_url(mirror: MirrorProcess, image: PushedImage, digest: str) -> str:
    return f"{mirror.url}/v2/{image.repository}/blobs/{digest}"


def test_cold_then_warm_pull_redirects_hits_to_the_bucket(
    redirecting, upstream, images, s3_server, bucket, skopeo, tmp_path
):
    big = images.big
    mark = upstream.log_mark()
    copy(skopeo, redirecting, "library/big:1", tmp_path / "cold")
    for blob in big.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    # In the bucket, at their content addresses, whole; nothing on the mirror's disk.
    objects = s3_server.keys(bucket, prefix="redirect/")
    assert objects == {blob_key("redirect", blob.digest): len(blob.data) for blob in big.blobs}
    assert s3_server.uploads(bucket) == []
    assert redirecting.stored_blobs() == {} and redirecting.temp_files() == []

    access = AccessLog(redirecting.log_path)
    warm_mark, upstream_mark, s3_mark = access.mark(), upstream.log_mark(), len(s3_server.requests_log())
    copy(skopeo, redirecting, "library/big:1", tmp_path / "warm")
    assert dir_blobs(tmp_path / "warm") == dir_blobs(tmp_path / "cold")
    assert set(dir_blobs(tmp_path / "warm")) == {blob.digest.split(":")[1] for blob in big.blobs}
    for blob in big.blobs:
        assert upstream.blob_gets(blob.digest, since=upstream_mark) == 0, "a warm pull asks the upstream for no blob"
    blob_answers = {e.digest(): e.status for e in access.entries(warm_mark) if e.is_blob and e.method == "GET"}
    assert blob_answers == {blob.digest: 307 for blob in big.blobs}
    # skopeo followed each redirect to the bucket.
    fetched = {r.path for r in s3_server.requests_log()[s3_mark:] if r.method == "GET" and r.status == 200}
    assert fetched >= {f"/{bucket}/{blob_key('redirect', blob.digest)}" for blob in big.blobs}


def test_redirect_mode_ranges_head_and_follow(redirecting, upstream, images):
    small = images.small
    layer = small.layers[0]
    url = f"{redirecting.url}/v2/library/small/blobs/{layer.digest}"
    assert requests.get(url, timeout=30).content == layer.data  # cold: streamed from the fill

    hit = requests.get(url, allow_redirects=False, timeout=30)
    assert hit.status_code == 307 and "X-Amz-Signature=" in hit.headers["Location"]
    assert hit.headers["Docker-Content-Digest"] == layer.digest
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer.size
    ranged = requests.get(url, headers={"Range": "bytes=100-4195"}, timeout=30)  # the client sends its range on
    assert ranged.status_code == 206 and ranged.content == layer.data[100:4196]
    assert ranged.history and ranged.history[0].status_code == 307
    suffix = requests.get(url, headers={"Range": "bytes=-10"}, timeout=30)
    assert suffix.status_code == 206 and suffix.content == layer.data[-10:]


def test_stream_mode_pull_and_ranges(streaming, upstream, images, s3_server, bucket, skopeo, tmp_path):
    small = images.small
    mark = upstream.log_mark()
    copy(skopeo, streaming, "library/small:1", tmp_path / "cold")
    access = AccessLog(streaming.log_path)
    warm_mark = access.mark()
    copy(skopeo, streaming, "library/small:1", tmp_path / "warm")
    assert dir_blobs(tmp_path / "warm") == dir_blobs(tmp_path / "cold")
    for blob in small.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    blob_answers = {e.digest(): e.status for e in access.entries(warm_mark) if e.is_blob and e.method == "GET"}
    assert blob_answers == {blob.digest: 200 for blob in small.blobs}, "hits sent by the mirror itself"
    assert set(s3_server.keys(bucket, prefix="stream/")) == {blob_key("stream", b.digest) for b in small.blobs}

    layer = small.layers[0]
    url = f"{streaming.url}/v2/library/small/blobs/{layer.digest}"
    whole = requests.get(url, allow_redirects=False, timeout=30)
    assert whole.status_code == 200 and whole.content == layer.data
    assert int(whole.headers["Content-Length"]) == layer.size
    ranged = requests.get(url, headers={"Range": "bytes=1000-2999"}, allow_redirects=False, timeout=30)
    assert ranged.status_code == 206 and ranged.content == layer.data[1000:3000]
    assert ranged.headers["Content-Range"] == f"bytes 1000-2999/{layer.size}"
    beyond = requests.get(url, headers={"Range": f"bytes={layer.size}-"}, allow_redirects=False, timeout=30)
    assert beyond.status_code == 416 and beyond.json()["errors"][0]["code"] == "RANGE_INVALID"


def test_fill_cut_midway_leaves_no_visible_object(redirecting, proxy, upstream, s3_server, bucket):
    image = fresh_image(upstream, [12 * MB])
    layer = image.layers[0]
    key = blob_key("redirect", layer.digest)
    proxy.cut_next(f"/blobs/{layer.digest}", after_bytes=8 * MB)  # after one part went up
    try:
        with requests.get(blob_url(redirecting, image, layer.digest), stream=True, timeout=60) as response:
            body = b"".join(response.iter_content(256 * 1024))
        assert len(body) < layer.size, "the client's answer is cut short"
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        pass
    assert proxy.cut_count >= 1
    assert key not in s3_server.keys(bucket)
    assert key not in s3_server.uploads(bucket), "the failed fill aborted its upload"
    again = requests.get(blob_url(redirecting, image, layer.digest), timeout=60)
    assert again.status_code == 200 and again.content == layer.data
    # The client may have it all before the upload completes.
    assert wait_for(lambda: s3_server.keys(bucket).get(key), lambda size: size == layer.size) == layer.size


def test_killed_fill_leaves_no_visible_object_and_gc_aborts_its_upload(
    proxy, upstream, s3_server, bucket, tmp_path_factory
):
    mirror = s3_mirror_process(
        tmp_path_factory, "s3-killed", proxy.url, upstream, s3_server, bucket, MIRROR_S3_PREFIX="killed"
    ).start()
    image = fresh_image(upstream, [12 * MB])
    layer = image.layers[0]
    key = blob_key("killed", layer.digest)
    proxy.bytes_per_second = 4 * MB
    try:
        response = requests.get(blob_url(mirror, image, layer.digest), stream=True, timeout=60)
        deadline = time.monotonic() + 30
        while key not in s3_server.uploads(bucket):  # a part is up: the fill is midway
            assert time.monotonic() < deadline, mirror.log_tail()
            time.sleep(0.1)
        os.killpg(mirror.process.pid, signal.SIGKILL)
        mirror.process.wait()
        response.close()
    finally:
        proxy.bytes_per_second = None
    assert key not in s3_server.keys(bucket)
    assert key in s3_server.uploads(bucket)
    # moto reports every upload as begun long ago, so this collection finds it abandoned (its
    # owner's lock died with it).
    collected = subprocess.run(
        [sys.executable, "manage.py", "gc"],
        cwd=PROJECT_ROOT,
        env=mirror.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr
    assert key not in s3_server.uploads(bucket)
    assert key not in s3_server.keys(bucket)


@pytest.fixture
def replicas(proxy, upstream, s3_server, bucket, tmp_path_factory) -> Iterator[tuple[MirrorProcess, MirrorProcess]]:
    """Two replicas with data directories of their own: they share the bucket, Redis and the
    database (where a blob's provenance is recorded), as replicas do."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    first = s3_mirror_process(
        tmp_path_factory,
        "s3-replica0",
        proxy.url,
        upstream,
        s3_server,
        bucket,
        MIRROR_S3_PREFIX="replicas",
        REDIS_URL=REDIS_URL,
    )
    second = s3_mirror_process(
        tmp_path_factory,
        "s3-replica1",
        proxy.url,
        upstream,
        s3_server,
        bucket,
        database=first.database,
        MIRROR_S3_PREFIX="replicas",
        REDIS_URL=REDIS_URL,
    )
    pair = (first, second)
    try:
        for replica in pair:
            replica.start()
        yield pair
    finally:
        for replica in pair:
            replica.stop()
        redis.Redis.from_url(REDIS_URL).flushdb()


def test_concurrent_cold_pulls_across_replicas_fetch_each_blob_once(
    replicas, proxy, upstream, s3_server, bucket, skopeo, tmp_path
):
    image = fresh_image(upstream, [6 * MB, 8 * MB])
    proxy.bytes_per_second = 20 * MB  # slow enough that every client arrives mid-fill
    mark = upstream.log_mark()
    hosts = [replicas[i % 2].host for i in range(8)]
    try:
        destinations = concurrent_skopeo_pulls(skopeo, hosts, image.reference, tmp_path)
    finally:
        proxy.bytes_per_second = None
    assert_pulled_correctly(destinations, image)
    for blob in image.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    assert set(s3_server.keys(bucket, prefix="replicas/")) == {blob_key("replicas", b.digest) for b in image.blobs}
    answers = {}  # replica → digest → the statuses of its blob GETs
    for replica in replicas:
        for entry in AccessLog(replica.log_path).entries():
            if entry.is_blob and entry.method == "GET":
                answers.setdefault(replica.host, {}).setdefault(entry.digest(), set()).add(entry.status)
        assert set(answers[replica.host]) == {b.digest for b in image.blobs}, "each replica served every blob"
        assert replica.stored_blobs() == {}
    for blob in image.blobs:
        # The replica that did not fill it waited for the commit, then redirected to the object.
        assert any(answers[r.host][blob.digest] == {307} for r in replicas), answers
    for blob in image.blobs:
        stored = s3_server.client().get_object(Bucket=bucket, Key=blob_key("replicas", blob.digest))["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == blob.digest.split(":")[1]
