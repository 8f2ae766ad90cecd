"""/readyz with Redis configured: what a load balancer reads to send pulls elsewhere."""
from __future__ import annotations

import pytest
import redis

from tests.support.upstream_registry import free_port

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own on the machine's Redis


@pytest.fixture(autouse=True)
def plain_mirror(settings, tmp_path):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"  # nobody listens: never asked here
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL, settings.MIRROR_BROKER_CONFIGURED = "filesystem://", False
    settings.MIRROR_STATS_REDIS_URL = ""
    from registry import redisclients

    redisclients.forget()  # no breaker state from another test


def closed_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_a_redis_that_answers_is_reported_and_ready(client, settings):
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.MIRROR_STATS_REDIS_URL = REDIS_URL
    settings.MIRROR_BROKER_CONFIGURED = True
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "redis": "ok"}, "one Redis, one check"
    assert "failing" not in ready.json()


def test_redis_down_keeps_the_replica_ready_and_names_the_fallback(client, settings):
    # Every replica shares that Redis, and serves without it: unready, they would all be dropped.
    settings.REDIS_URL = settings.MIRROR_STATS_REDIS_URL = closed_redis()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok" and "failing" not in body
    assert body["checks"]["redis"].startswith("error: ") and body["checks"]["database"] == "ok"
    assert "file locks" in body["fallbacks"]["locks"] and "Redis unavailable since" in body["fallbacks"]["locks"]
    again = client.get("/readyz").json()
    assert again["checks"]["redis"] == body["checks"]["redis"], "known down: reported without asking it again"
    assert "upstreams" in body, "the rest is still reported"


def test_a_broker_of_its_own_that_is_down_makes_it_unready(client, settings):
    redis.Redis.from_url(REDIS_URL).ping()
    settings.REDIS_URL = REDIS_URL
    settings.CELERY_BROKER_URL, settings.MIRROR_BROKER_CONFIGURED = closed_redis(), True
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["broker"]
    assert ready.json()["checks"]["redis"] == "ok"


def test_statistics_redis_down_is_reported_but_never_unready(client, settings):
    settings.MIRROR_STATS_REDIS_URL = closed_redis()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["statistics"].startswith("error: ")


def test_a_broker_that_is_not_redis_is_not_pinged(client, settings):
    settings.CELERY_BROKER_URL, settings.MIRROR_BROKER_CONFIGURED = "amqp://127.0.0.1:9//", True
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["broker"] == "not checked"
