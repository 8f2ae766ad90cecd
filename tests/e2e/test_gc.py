"""Garbage collection beside pulls, on a real mirror process: with the upstream gone, a client
that got a manifest must still get every blob while collections run, and what nobody uses goes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
import hashlib
import subprocess
import sys
import threading

import pytest
import requests

from tests.support.images import MANIFEST_ACCEPT, PushedImage, push_image
from tests.support.mirror import PROJECT_ROOT, MirrorProcess
from tests.support.upstream_registry import UpstreamRegistry

MB = 1024 * 1024
AGE_SQL = [
    "UPDATE registry_manifest SET created_at = ?, last_pulled_at = ?",
    "UPDATE registry_tag SET last_pulled_at = ?",
    "UPDATE registry_blob SET created_at = ?, last_pulled_at = ?",
    "UPDATE registry_repository SET created_at = ?, last_pulled_at = ?",
]


@pytest.fixture(scope="module")
def own_upstream(token_server, upstream) -> Iterator[UpstreamRegistry]:
    """An upstream of this module's own, so stopping it disturbs no other test."""
    registry = UpstreamRegistry(
        token_server, username=upstream.username, password=upstream.password, service="gc-upstream"
    ).start()
    yield registry
    registry.cleanup()


@pytest.fixture(scope="module")
def pushed(own_upstream) -> dict[str, PushedImage]:
    return {
        "keep": push_image(own_upstream, "library/keep", "1", layer_sizes=[3 * MB, 3 * MB, 2 * MB], seed=7301),
        "other": push_image(own_upstream, "library/other", "1", layer_sizes=[1 * MB], seed=7302),
    }


@pytest.fixture
def mirror(own_upstream, tmp_path) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path / "data",
        own_upstream.url,
        username=own_upstream.username,
        password=own_upstream.password,
        MIRROR_TAG_TTL="3600",
        MIRROR_CACHE_MAX_BYTES="1",  # always over quota: GC evicts all it may
        MIRROR_GC_GRACE_PERIOD="600",
        MIRROR_GC_INTERVAL="0",
        MIRROR_POPULAR_INTERVAL="0",
    ).start()
    yield process
    process.stop()


def gc(mirror: MirrorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "gc", *args],
        cwd=PROJECT_ROOT,
        env=mirror.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy(skopeo, mirror: MirrorProcess, reference: str, dest) -> dict[str, bytes]:
    skopeo.run("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{mirror.host}/{reference}", f"dir:{dest}")
    return {p.name: p.read_bytes() for p in dest.iterdir() if len(p.name) == 64}


def rows(mirror: MirrorProcess) -> list:
    return [
        mirror.query(f"SELECT * FROM registry_{table} ORDER BY id")
        for table in ("manifest", "tag", "blob", "repository")
    ]


def test_a_pull_running_during_gc_gets_every_blob(mirror, own_upstream, pushed, skopeo, tmp_path):
    keep, other = pushed["keep"], pushed["other"]
    copy(skopeo, mirror, "library/keep:1", tmp_path / "fill-keep")
    copy(skopeo, mirror, "library/other:1", tmp_path / "fill-other")
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    for statement in AGE_SQL:  # as if nobody had pulled anything for ten days
        mirror.query(statement, *[ten_days_ago] * statement.count("?"))

    before = (rows(mirror), set(mirror.stored_blobs()))
    dry = gc(mirror, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would evict library/keep@" in dry.stdout and "would evict library/other@" in dry.stdout
    assert (rows(mirror), set(mirror.stored_blobs())) == before, "a dry run changes nothing"

    own_upstream.stop()  # from now on only the mirror's cache can answer
    try:
        # The client gets the manifest: from now on its image is in use.
        manifest = requests.get(
            f"{mirror.url}/v2/library/keep/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=10
        )
        assert manifest.status_code == 200 and manifest.content == keep.manifest

        stop, runs = threading.Event(), []

        def collect_repeatedly() -> None:
            while not stop.is_set():
                runs.append(gc(mirror))

        collector = threading.Thread(target=collect_repeatedly)
        collector.start()
        try:
            while not runs:  # a collection has completed; the next is running
                collector.join(timeout=0.1)
            pulled = copy(skopeo, mirror, "library/keep:1", tmp_path / "during-gc")
        finally:
            stop.set()
            collector.join(timeout=120)
    finally:
        own_upstream.start()

    assert set(pulled) == {blob.digest.split(":")[1] for blob in keep.blobs}
    for name, content in pulled.items():
        assert hashlib.sha256(content).hexdigest() == name
    assert runs and all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    report = "\n".join(run.stdout for run in runs)
    assert "evict library/other@" in report and "evict library/keep@" not in report
    stored = mirror.stored_blobs()
    assert all(blob.digest in stored for blob in keep.blobs)
    assert not any(blob.digest in stored for blob in other.blobs)
    freed = mirror.query("SELECT SUM(bytes_freed), SUM(manifests_deleted) FROM registry_gcrun")[0]
    assert freed == (sum(blob.size for blob in other.blobs), 1), "what was freed is recorded"
