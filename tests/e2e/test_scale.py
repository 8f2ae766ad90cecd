"""A scaled deployment on loopback: two web replicas on ports of their own sharing one
PostgreSQL database (on either pass of the suite), one Redis and one S3 bucket, before an
upstream reached through a proxy that can slow it down. Sixteen concurrent cold pulls split
across the replicas download each blob and the manifest once, and the statistics of both
replicas add up in the dashboard API of either; a replica killed mid-fill leaves the blob to
the other, which takes the fill over once the dead owner's lock expires, and no partial
object is ever visible in the bucket."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import hashlib
import itertools
import os
from pathlib import Path
import signal
import subprocess
import threading
import time
import uuid

import pytest
import redis

from tests.e2e.test_pull import copy, dir_blobs
from tests.e2e.test_s3 import blob_key
from tests.e2e.test_single_flight import assert_pulled_correctly, concurrent_skopeo_pulls
from tests.support.accesslog import AccessLog
from tests.support.celery_worker import forget_keys
from tests.support.dashboard import DashboardApi, create_staff, wait_for
from tests.support.databases import ProcessDatabase, check_server, postgres_session_url
from tests.support.fault_proxy import FaultProxy
from tests.support.images import PushedImage, push_image
from tests.support.mirror import MirrorProcess
from tests.support.s3_server import S3Server

MB = 1024 * 1024
PULLS = 16
REDIS_URL = "redis://127.0.0.1:6379/7"  # this module's own database on the machine's Redis
S3_PREFIX = "scale"
# Short, so the survivor takes over a dead replica's fill within seconds (default 120 s); long
# enough that a live owner under the load of 16 pulls always renews in time.
LOCK_TTL = 6
# The beat task that moves what every process sent to Redis into the database.
FLUSH_STATISTICS = "from dashboard.tasks import flush_stats; flush_stats()"

_seeds = itertools.count(9100)


@dataclass
class Deployment:
    replicas: list[MirrorProcess]
    proxy: FaultProxy
    bucket: str


@pytest.fixture(scope="module")
def shared_database(tmp_path_factory) -> Iterator[ProcessDatabase]:
    """A fresh PostgreSQL database for both replicas (a scaled deployment's database, whichever
    the suite's pass), dropped at the end."""
    url = postgres_session_url("scaletest")
    problem = check_server(url)
    if problem:  # like `make test` itself: PostgreSQL is part of what the suite needs, never a skip
        pytest.fail(f"the scaled deployment needs PostgreSQL at {url}: {problem}")
    database = ProcessDatabase(tmp_path_factory.mktemp("scale-db"), session_url=url).create()
    yield database
    database.drop()


@pytest.fixture(scope="module")
def deployment(upstream, s3_server: S3Server, shared_database, tmp_path_factory) -> Iterator[Deployment]:
    # Keys of this run's own: another run of this module on the machine shares the database
    # (a flush, or their counters in our figures, would be theirs to suffer).
    key_prefix = f"scale-{uuid.uuid4().hex[:12]}:"
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis: no answer is a failure
    proxy = FaultProxy(upstream.url).start()
    bucket = s3_server.create_bucket("scale")
    root = tmp_path_factory.mktemp("scale")
    shared = {
        "REDIS_URL": REDIS_URL,
        "MIRROR_REDIS_KEY_PREFIX": key_prefix,
        "DJANGO_SECRET_KEY": f"scale-test-{uuid.uuid4().hex}",  # every replica signs alike
        "MIRROR_LOCK_TTL": str(LOCK_TTL),
        "MIRROR_STATS_FLUSH_INTERVAL": "1",  # each process sends its figures to Redis every second
        "MIRROR_TAG_TTL": "3600",
        **s3_server.mirror_env(bucket, MIRROR_S3_PREFIX=S3_PREFIX),
    }
    replicas = [
        MirrorProcess(
            root / name,
            proxy.url,
            username=upstream.username,
            password=upstream.password,
            database=shared_database,
            **shared,
        )
        for name in ("a", "b")
    ]
    try:
        for replica in replicas:  # together, on a database nobody has migrated yet
            replica.launch()
        for replica in replicas:
            replica.wait_until_serving()
        yield Deployment(replicas, proxy, bucket)
    finally:
        for replica in replicas:
            replica.stop()
        proxy.stop()
        forget_keys(REDIS_URL, key_prefix)


def fresh_image(upstream, layer_sizes: list[int]) -> PushedImage:
    seed = next(_seeds)
    return push_image(upstream, f"scale/img{seed}", "1", layer_sizes=layer_sizes, seed=seed)


def served_requests(replica: MirrorProcess, image: PushedImage) -> list:
    """The manifest and blob GETs of the image this replica answered."""
    prefix = f"/v2/{image.repository}/"
    return [
        entry
        for entry in AccessLog(replica.log_path).entries()
        if entry.method == "GET" and entry.path.startswith(prefix) and ("/manifests/" in entry.path or entry.is_blob)
    ]


def test_sixteen_cold_pulls_across_replicas_fetch_once_and_their_figures_add_up(
    deployment, upstream, s3_server, skopeo, tmp_path
):
    image = fresh_image(upstream, [3 * MB, 4 * MB])
    first, second = deployment.replicas
    deployment.proxy.bytes_per_second = 20 * MB  # slow enough that the clients arrive mid-fill
    mark = upstream.log_mark()
    try:
        hosts = [deployment.replicas[i % 2].host for i in range(PULLS)]
        destinations = concurrent_skopeo_pulls(skopeo, hosts, image.reference, tmp_path)
    finally:
        deployment.proxy.bytes_per_second = None
    assert_pulled_correctly(destinations, image)

    for blob in image.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    manifest_gets = [
        r
        for r in upstream.requests_log(since=mark)
        if r.method == "GET" and r.path == f"/v2/{image.repository}/manifests/{image.tag}" and r.status != 401
    ]
    assert len(manifest_gets) == 1, "one upstream GET of the manifest for both replicas"
    assert s3_server.keys(deployment.bucket, prefix=f"{S3_PREFIX}/") == {
        blob_key(S3_PREFIX, b.digest): b.size for b in image.blobs
    }
    per_pull = 1 + len(image.blobs)  # the manifest by tag, then each blob
    redirects = 0  # hits sent on to the bucket
    for replica in deployment.replicas:
        answered = served_requests(replica, image)
        assert len(answered) == PULLS // 2 * per_pull, replica.host
        assert {entry.status for entry in answered} <= {200, 307}
        redirects += sum(1 for entry in answered if entry.status == 307)

    # Figures: each process sends its own to Redis; the beat task moves them into the database.
    token = create_staff(first)
    api = DashboardApi(second, token)  # the other replica answers from the same database

    def figures() -> dict:
        first.manage("shell", "-c", FLUSH_STATISTICS)
        return api.day(repository=image.repository)

    manifest_size = len(image.manifest)
    blob_bytes = sum(blob.size for blob in image.blobs)
    day = wait_for(figures, lambda got: got["requests"] >= PULLS * per_pull)
    assert (day["requests"], day["pulls"], day["errors"], day["stale"]) == (PULLS * per_pull, PULLS, 0, 0)
    assert day["hits"] + day["misses"] == day["requests"]
    assert day["misses"] >= per_pull, "every blob and the manifest came from the upstream once"
    assert day["hits"] >= redirects
    assert day["bytes_served"] == PULLS * (manifest_size + blob_bytes)
    assert day["bytes_from_upstream"] == manifest_size + blob_bytes
    blobs = api.day(repository=image.repository, kind="blob")
    assert (blobs["requests"], blobs["bytes_served"]) == (PULLS * len(image.blobs), PULLS * blob_bytes)


@dataclass
class BucketWatch:
    """Lists one key of the bucket over and over, keeping every size it was seen with."""

    s3_server: S3Server
    bucket: str
    key: str
    sizes: set[int] = field(default_factory=set)
    looks: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BucketWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._look()  # and a last look, after everything

    def _look(self) -> None:
        found = self.s3_server.keys(self.bucket, prefix=self.key)
        self.sizes.update(size for key, size in found.items() if key == self.key)
        self.looks += 1

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._look()
            self._stop.wait(0.05)


def skopeo_pull(skopeo, replica: MirrorProcess, image: PushedImage, dest: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            skopeo.binary,
            "--policy",
            str(skopeo.policy),
            "copy",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{replica.host}/{image.reference}",
            f"dir:{dest}",
        ],
        env=skopeo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_replica_killed_mid_fill_leaves_the_blob_to_the_other(deployment, upstream, s3_server, skopeo, tmp_path):
    """Last in the module: it kills the first replica."""
    victim, survivor = deployment.replicas
    image = fresh_image(upstream, [12 * MB])
    layer = image.layers[0]
    key = blob_key(S3_PREFIX, layer.digest)
    watch = BucketWatch(s3_server, deployment.bucket, key).start()
    mark = upstream.log_mark()
    deployment.proxy.bytes_per_second = 4 * MB
    try:
        dying_pull = skopeo_pull(skopeo, victim, image, tmp_path / "cut")
        deadline = time.monotonic() + 30
        while key not in s3_server.uploads(deployment.bucket):  # a part is up: the fill is midway
            assert time.monotonic() < deadline, victim.log_tail()
            time.sleep(0.05)
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        deployment.proxy.bytes_per_second = None
        dying_pull.communicate(timeout=60)
        assert dying_pull.returncode != 0, "the client of the killed replica was cut off"
        # The survivor waits for the dead owner's lock to expire, then fills the blob itself.
        copy(skopeo, survivor, image.reference, tmp_path / "after")
    finally:
        deployment.proxy.bytes_per_second = None
        watch.stop()

    assert dir_blobs(tmp_path / "after") == {blob.digest.split(":")[1]: blob.data for blob in image.blobs}
    assert (tmp_path / "after" / "manifest.json").read_bytes() == image.manifest
    assert watch.looks > 10 and watch.sizes == {layer.size}, "only the whole blob was ever visible"
    stored = s3_server.client().get_object(Bucket=deployment.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == layer.digest.split(":")[1]
    assert upstream.blob_gets(layer.digest, since=mark) == 2, "the dead fill's download, then the survivor's"
    assert key in s3_server.uploads(deployment.bucket), "the dead fill's upload is left for garbage collection"
