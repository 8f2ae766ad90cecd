"""A real Celery worker process on the machine's Redis, beside the mirror: prefetch (all
platforms, or some) and the refresh of popular tags, then pulls through the mirror with skopeo."""

from __future__ import annotations

from collections.abc import Iterator
import hashlib
from pathlib import Path
import subprocess
import sys
import time

import pytest

from tests.support.celery_worker import CeleryWorker, forget_keys, redis_broker
from tests.support.images import PushedIndex, push_image, push_index
from tests.support.mirror import PROJECT_ROOT, MirrorProcess

KB = 1024
PLATFORMS = [("linux", "amd64"), ("linux", "arm64"), ("linux", "arm", "v7")]


@pytest.fixture(scope="module")
def broker() -> Iterator[tuple[str, str]]:
    url, prefix = redis_broker()
    yield url, prefix
    forget_keys(url, prefix)


@pytest.fixture(scope="module")
def mirror(upstream, broker, tmp_path_factory) -> Iterator[MirrorProcess]:
    """The mirror with Redis as its broker: no embedded worker, the one below does the work."""
    url, prefix = broker
    process = MirrorProcess(
        tmp_path_factory.mktemp("worker-mirror") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        CELERY_BROKER_URL=url,
        REDIS_URL="",
        MIRROR_REDIS_KEY_PREFIX=prefix,
        MIRROR_MANIFEST_MEMORY_BYTES="0",  # what a tag points at is read from the database
        MIRROR_TAG_TTL="3600",
        MIRROR_PREFETCH_BACKOFF="0.2",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def worker(mirror) -> Iterator[CeleryWorker]:
    process = CeleryWorker(mirror.env, mirror.data_dir.parent / "celery-worker.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def multi_layer(upstream) -> PushedIndex:
    return push_index(
        upstream, "library/prefetched", "1", platforms=PLATFORMS, layer_sizes=[1024 * KB, 512 * KB, 256 * KB], seed=7201
    )


def manage(mirror: MirrorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=mirror.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def pull(skopeo, mirror: MirrorProcess, reference: str, dest: Path, *extra: str) -> dict[str, bytes]:
    skopeo.run(
        "copy", "--src-tls-verify=false", "--src-no-creds", *extra, f"docker://{mirror.host}/{reference}", f"dir:{dest}"
    )
    return {p.name: p.read_bytes() for p in dest.iterdir() if len(p.name) == 64}


def test_a_prefetch_by_the_worker_makes_the_next_pull_free(mirror, worker, upstream, skopeo, multi_layer, tmp_path):
    mark = upstream.log_mark()
    done = manage(mirror, "prefetch", "library/prefetched:1")
    assert done.returncode == 0, done.stderr
    assert "succeeded: library/prefetched:1" in done.stdout and "12/12 blobs" in done.stdout
    assert "100%" in done.stderr, "the progress bar"
    assert "Task registry.prefetch[" in worker.log() and "prefetch library/prefetched:1: succeeded" in worker.log()
    stored = mirror.stored_blobs()
    for blob in multi_layer.blobs:
        assert blob.digest in stored
        assert upstream.blob_gets(blob.digest, since=mark) == 1

    pull_mark = upstream.log_mark()
    pulled = pull(skopeo, mirror, "library/prefetched:1", tmp_path / "all", "--all")
    assert set(pulled) == {blob.digest.split(":")[1] for blob in multi_layer.blobs}
    for name, content in pulled.items():
        assert hashlib.sha256(content).hexdigest() == name
    for blob in multi_layer.blobs:
        assert upstream.blob_gets(blob.digest, since=pull_mark) == 0, blob.digest


def test_a_prefetch_for_some_platforms_fetches_only_those(mirror, worker, upstream, skopeo, tmp_path):
    image = push_index(
        upstream, "library/filtered", "1", platforms=PLATFORMS, layer_sizes=[256 * KB, 128 * KB], seed=7202
    )
    mark = upstream.log_mark()
    done = manage(mirror, "prefetch", "library/filtered:1", "--platform", "linux/arm64,linux/arm/v7")
    assert done.returncode == 0, done.stderr
    wanted, unwanted = [image.child("arm64"), image.child("arm")], image.child("amd64")
    stored = mirror.stored_blobs()
    for child in wanted:
        assert all(blob.digest in stored for blob in child.blobs)
    for blob in unwanted.blobs:
        assert blob.digest not in stored
        assert upstream.blob_gets(blob.digest, since=mark) == 0
    assert mirror.query("SELECT status, platforms FROM registry_prefetchjob WHERE repository = 'library/filtered'") == [
        ("succeeded", "linux/arm64,linux/arm/v7")
    ]
    pull_mark = upstream.log_mark()
    pull(skopeo, mirror, "library/filtered:1", tmp_path / "arm64", "--override-arch", "arm64")
    assert all(upstream.blob_gets(blob.digest, since=pull_mark) == 0 for blob in wanted[0].blobs)


def test_the_worker_refreshes_a_popular_tag_that_moved_before_anyone_pulls_it(
    mirror, worker, upstream, skopeo, tmp_path
):
    push_image(upstream, "library/hot", "1", layer_sizes=[256 * KB], seed=7203)
    pull(skopeo, mirror, "library/hot:1", tmp_path / "before")
    assert mirror.query(
        "SELECT SUM(c.count) FROM registry_tagpullcount c JOIN registry_tag t ON t.id = c.tag_id "
        "JOIN registry_repository r ON r.id = t.repository_id WHERE r.name = 'library/hot'"
    ) == [(1,)]
    moved = push_image(upstream, "library/hot", "1", layer_sizes=[256 * KB], seed=7204)

    sent = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "mirrorsite", "call", "registry.refresh_popular"],
        cwd=PROJECT_ROOT,
        env=mirror.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 60
    while current_digest(mirror, "library/hot") != moved.digest and time.monotonic() < deadline:
        time.sleep(0.3)
    assert current_digest(mirror, "library/hot") == moved.digest, worker.log()[-3000:]
    stored = mirror.stored_blobs()
    assert all(blob.digest in stored for blob in moved.blobs), "cached before any client asked"

    pull_mark = upstream.log_mark()
    pulled = pull(skopeo, mirror, "library/hot:1", tmp_path / "after")
    assert set(pulled) == {blob.digest.split(":")[1] for blob in moved.blobs}
    assert [r for r in upstream.requests_log(since=pull_mark) if r.method == "GET"] == []


def current_digest(mirror: MirrorProcess, repository: str) -> str | None:
    rows = mirror.query(
        "SELECT m.digest FROM registry_tag t JOIN registry_manifest m ON m.id = t.manifest_id "
        "JOIN registry_repository r ON r.id = t.repository_id WHERE r.name = ? AND t.name = '1'",
        repository,
    )
    return rows[0][0] if rows else None
