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


# --- who may read it ------------------------------------------------------------------------------
def test_readiness_is_refused_to_clients_outside_the_monitoring_networks(client, settings):
    settings.MIRROR_METRICS_TOKEN = ""
    assert client.get("/readyz", REMOTE_ADDR="203.0.113.5").status_code == 403, "the Internet at large"
    assert client.get("/healthz", REMOTE_ADDR="203.0.113.5").status_code == 200
    for inside in ("127.0.0.1", "10.2.3.4", "172.20.0.3", "192.168.1.1", "fd00::1"):
        assert client.get("/readyz", REMOTE_ADDR=inside).status_code == 200, inside
    settings.MIRROR_MONITORING_NETWORKS = ["203.0.113.0/24"]
    assert client.get("/readyz", REMOTE_ADDR="203.0.113.5").status_code == 200
    assert client.get("/readyz", REMOTE_ADDR="10.2.3.4").status_code == 403


def test_the_allow_list_is_the_default_monitoring_networks(client, settings):
    settings.MIRROR_ALLOWED_NETWORKS = ["198.51.100.0/24"]
    assert client.get("/readyz", REMOTE_ADDR="198.51.100.7").status_code == 200


def test_the_metrics_token_opens_readiness_from_anywhere(client, settings):
    settings.MIRROR_METRICS_TOKEN = "scrape-me"
    assert client.get("/readyz", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/readyz", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


def test_readiness_names_accounts_by_id_only(client, settings):
    from registry.models import Upstream, UpstreamAccount

    upstream = Upstream.objects.create(name="private-hub", url="http://127.0.0.1:9")
    account = UpstreamAccount.objects.create(upstream=upstream, username="ci-robot-account")
    upstream.active_account = account
    upstream.save()
    ready = client.get("/readyz")
    assert "ci-robot-account" not in ready.content.decode()
    report = ready.json()["upstreams"]["private-hub"]
    assert report["account_in_use"] == account.pk and str(account.pk) in report["accounts"]
