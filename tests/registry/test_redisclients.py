"""The one Redis client factory: timeouts, no retried timeouts, and the circuit breaker that
spares callers a Redis known to be down."""

from __future__ import annotations

import logging

import pytest
import redis

from registry import redisclients
from tests.support.tcp_relay import TcpRelay
from tests.support.upstream_registry import free_port

REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own on the machine's Redis


@pytest.fixture(autouse=True)
def fresh_clients(settings):
    settings.MIRROR_REDIS_TIMEOUT = 0.5
    redisclients.forget()
    yield
    redisclients.forget()


@pytest.fixture
def hung_redis():
    """A server that accepts connections and never answers: Redis frozen (SIGSTOP)."""
    relay = TcpRelay().start()
    yield relay
    relay.stop()


def test_every_client_has_connect_and_socket_timeouts(settings):
    settings.MIRROR_REDIS_TIMEOUT = 1.5
    client = redisclients.client(REDIS_URL)
    options = client.connection_pool.connection_kwargs
    assert options["socket_timeout"] == 1.5 and options["socket_connect_timeout"] == 1.5
    assert redisclients.client(REDIS_URL) is client, "one client (one pool) per URL and process"


def test_a_hung_redis_times_out_once_and_is_not_retried(hung_redis):
    client = redisclients.client(f"redis://{hung_redis.address}/0")
    with pytest.raises(redis.TimeoutError):
        client.ping()
    # redis-py's default would have tried four times, with backoff in between.
    assert hung_redis.connections == 1


def test_a_redis_that_failed_is_not_asked_again_until_its_retry(hung_redis, caplog):
    url = f"redis://{hung_redis.address}/0"
    with pytest.raises(redis.TimeoutError), redisclients.guarded(url) as client:
        client.ping()
    assert redisclients.breaker(url).is_down()
    for _ in range(5):
        with pytest.raises(redisclients.RedisUnavailable), redisclients.guarded(url) as client:
            client.ping()
    assert hung_redis.connections == 1, "known down: nobody waited on it again"
    outages = [r for r in caplog.records if r.name == "registry.redisclients"]
    assert len(outages) == 1 and "file locks" in outages[0].getMessage(), "said once, not per call"

    # The retry is due: exactly one caller probes (and pays the timeout), the others do not.
    redisclients.breaker(url)._health.retry_at = 0.0
    with pytest.raises(redis.TimeoutError), redisclients.guarded(url) as client:
        client.ping()
    with pytest.raises(redisclients.RedisUnavailable), redisclients.guarded(url):
        pass
    assert hung_redis.connections == 2


def test_a_redis_that_answers_again_closes_the_breaker(caplog):
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis
    breaker = redisclients.breaker(REDIS_URL)
    breaker.failed(redis.ConnectionError("refused"))
    breaker._health.retry_at = 0.0  # the retry is due
    with caplog.at_level(logging.WARNING, logger="registry.redisclients"), redisclients.guarded(REDIS_URL) as client:
        assert client.ping()
    assert not breaker.is_down()
    assert any("answers again" in r.getMessage() for r in caplog.records)
    with redisclients.guarded(REDIS_URL) as client:
        assert client.ping()


def test_a_refused_command_is_not_an_outage():
    redis.Redis.from_url(REDIS_URL).ping()
    with pytest.raises(redis.ResponseError), redisclients.guarded(REDIS_URL) as client:
        client.execute_command("NO-SUCH-COMMAND")
    assert not redisclients.breaker(REDIS_URL).is_down()


def test_a_stopped_redis_opens_the_breaker_at_once():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    with pytest.raises(redis.ConnectionError), redisclients.guarded(url) as client:
        client.ping()
    assert redisclients.breaker(url).health().error == "ConnectionError"
    with pytest.raises(redisclients.RedisUnavailable), redisclients.guarded(url):
        pass
