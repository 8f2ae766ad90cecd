"""/readyz of real mirror processes configured with Redis: one whose Redis is down stays ready
and names its fallback, one whose Redis answers is ready; /healthz answers either way."""

from __future__ import annotations

from collections.abc import Iterator
import uuid

import pytest
import redis
import requests

from tests.support.celery_worker import forget_keys
from tests.support.mirror import MirrorProcess
from tests.support.upstream_registry import free_port

REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own on the machine's Redis


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """Keys of this test only; removed after the processes stopped (tests ask for it first)."""
    prefix = f"readiness-{uuid.uuid4().hex[:12]}:"
    yield prefix
    forget_keys(REDIS_URL, prefix)


def start(processes: list[MirrorProcess], path, upstream, redis_url: str, key_prefix: str) -> MirrorProcess:
    process = MirrorProcess(
        path,
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        REDIS_URL=redis_url,
        MIRROR_REDIS_KEY_PREFIX=key_prefix,
    )
    processes.append(process)
    return process.start()


def test_a_replica_whose_redis_is_down_stays_ready_and_names_the_fallback(
    key_prefix, processes, upstream, images, tmp_path
):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    mirror = start(processes, tmp_path / "down", upstream, closed, key_prefix)
    ready = requests.get(f"{mirror.url}/readyz", timeout=30)
    assert ready.status_code == 200, "it serves without Redis, as every replica sharing it would"
    body = ready.json()
    assert body["status"] == "ok" and "failing" not in body
    assert body["checks"]["database"] == "ok" and body["checks"]["storage"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")
    assert "file locks" in body["fallbacks"]["locks"]
    assert requests.get(f"{mirror.url}/healthz", timeout=10).json() == {"status": "ok"}


def test_a_replica_whose_redis_answers_is_ready(key_prefix, processes, upstream, images, tmp_path):
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis
    mirror = start(processes, tmp_path / "up", upstream, REDIS_URL, key_prefix)
    ready = requests.get(f"{mirror.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "redis": "ok"}
    small = requests.get(
        f"{mirror.url}/v2/library/small/manifests/1", headers={"Accept": images.small.media_type}, timeout=30
    )
    assert small.status_code == 200 and small.content == images.small.manifest
