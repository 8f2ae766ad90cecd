"""A mirror whose Redis (REDIS_URL: locks, single flight, tokens, statistics) stops or hangs
keeps serving: cached images (tags past their TTL included) and misses pull, nothing answers
500, nothing waits on Redis past its timeout, /healthz and /v2/ answer while many requests are
in flight, and /readyz says what the replica falls back to. Each test has a Redis server of its
own (never the machine's shared one) and a mirror of its own."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import time

import pytest
import requests

from tests.e2e.conftest import TAG_TTL
from tests.support.accesslog import AccessLog
from tests.support.images import MANIFEST_ACCEPT
from tests.support.mirror import MirrorProcess
from tests.support.redis_server import RedisServer

REDIS_TIMEOUT = 2  # MIRROR_REDIS_TIMEOUT of these mirrors (the default)
# What a pull may take here: an upstream round trip or two, one Redis timeout, and margin.
PULL_TIMEOUT = 60


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()  # thaws it first if a test left it frozen


@pytest.fixture
def mirror_with_redis(redis_server, upstream, tmp_path) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        REDIS_URL=redis_server.url,
        MIRROR_TAG_TTL=str(TAG_TTL),
        MIRROR_REDIS_TIMEOUT=str(REDIS_TIMEOUT),
        # The frozen-Redis test opens 100 connections at once from one address, more than the
        # per-address cap of one server process: that cap is tested in test_slow_clients.py.
        MIRROR_CONNECTIONS_PER_ADDRESS="0",
        DJANGO_SECRET_KEY="redis-outage-tests-only-" + "k" * 40,
    ).start()
    yield process
    process.stop()


def pull(skopeo, mirror: MirrorProcess, reference: str, dest: Path, *extra: str) -> None:
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        *extra,
        f"docker://{mirror.host}/{reference}",
        f"dir:{dest}",
        timeout=PULL_TIMEOUT,
    )


def server_errors(mirror: MirrorProcess) -> list:
    return [entry for entry in AccessLog(mirror.log_path).entries() if entry.status >= 500]


def test_with_redis_stopped_cached_and_uncached_images_pull(mirror_with_redis, redis_server, skopeo, images, tmp_path):
    mirror = mirror_with_redis
    pull(skopeo, mirror, "library/small:1", tmp_path / "warm-up")  # cached while Redis answers
    redis_server.stop()
    time.sleep(TAG_TTL + 0.5)  # the cached tag is past its TTL: revalidating it takes a lock

    pull(skopeo, mirror, "library/small:1", tmp_path / "cached")
    pull(skopeo, mirror, "library/multi:1", tmp_path / "uncached", "--all")  # misses fill

    assert (tmp_path / "cached" / "manifest.json").read_bytes() == images.small.manifest
    assert (tmp_path / "uncached" / "manifest.json").read_bytes() == images.multi.manifest
    assert server_errors(mirror) == []
    assert mirror.temp_files() == [], "every fill finished"
    ready = requests.get(f"{mirror.url}/readyz", timeout=REDIS_TIMEOUT + 10)
    assert ready.status_code == 200 and ready.json()["checks"]["redis"].startswith("error: ")
    assert "file locks" in ready.json()["fallbacks"]["locks"]
    log = mirror.log_path.read_text(errors="replace")
    # Said once per server process (two here), not once per request.
    assert 1 <= log.count("single flight falls back to this machine's file locks") <= 2
    assert "shared token cache unavailable" not in log, "the outage is said once, not per pull"


def test_with_redis_frozen_pulls_succeed_and_the_mirror_keeps_answering(
    mirror_with_redis, redis_server, skopeo, images, tmp_path
):
    mirror = mirror_with_redis
    pull(skopeo, mirror, "library/small:1", tmp_path / "warm-up")
    time.sleep(TAG_TTL + 0.5)
    manifests = [f"{mirror.url}/v2/library/small/manifests/1", f"{mirror.url}/v2/library/moving/manifests/latest"]

    def get_manifest(index: int) -> int:
        url = manifests[index % len(manifests)]  # a cached tag past its TTL, and a miss
        return requests.get(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=PULL_TIMEOUT).status_code

    redis_server.freeze()
    try:
        # More requests that each need a lock than the mirror has threads (2 workers x 32).
        with ThreadPoolExecutor(max_workers=100) as pool:
            in_flight = [pool.submit(get_manifest, index) for index in range(100)]
            alive = requests.get(f"{mirror.url}/healthz", timeout=REDIS_TIMEOUT + 10)
            base = requests.get(f"{mirror.url}/v2/", timeout=REDIS_TIMEOUT + 10)
            statuses = [future.result() for future in in_flight]
        assert alive.status_code == 200 and base.status_code == 200
        assert statuses == [200] * len(statuses)

        pull(skopeo, mirror, "library/small:1", tmp_path / "cached")
        pull(skopeo, mirror, "library/multi:1", tmp_path / "uncached", "--all")
        assert (tmp_path / "cached" / "manifest.json").read_bytes() == images.small.manifest
        assert (tmp_path / "uncached" / "manifest.json").read_bytes() == images.multi.manifest

        ready = requests.get(f"{mirror.url}/readyz", timeout=REDIS_TIMEOUT + 10)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["checks"]["redis"].startswith("error: ") and "file locks" in body["fallbacks"]["locks"]
    finally:
        redis_server.thaw()
    assert server_errors(mirror) == []
