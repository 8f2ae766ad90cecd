"""Upstream tokens shared by replicas through Redis: two UpstreamClients stand for two replicas,
pulling from the session's real upstream (Distribution with its token server)."""

from __future__ import annotations

from collections.abc import Iterator
import uuid

import pytest
import redis

from registry.upstreams import tokencache
from registry.upstreams.client import UpstreamClient
from registry.upstreams.tokencache import SharedTokens
from tests.support.upstream_registry import free_port

REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own on the machine's Redis


@pytest.fixture
def shared(settings) -> Iterator[SharedTokens]:
    """The shared cache as a replica configured with REDIS_URL builds it; keys of this test only."""
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis
    settings.REDIS_URL = REDIS_URL
    settings.MIRROR_REDIS_KEY_PREFIX = f"tokencache-test-{uuid.uuid4().hex[:12]}:"
    cache = tokencache.shared_tokens()
    yield cache
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{settings.MIRROR_REDIS_KEY_PREFIX}*"):
        client.delete(key)


def replica(upstream, shared_tokens: SharedTokens | None) -> UpstreamClient:
    return UpstreamClient(upstream.url, upstream.username, upstream.password, shared_tokens=shared_tokens)


def pull_scopes(requests_since: list) -> list[tuple[str, ...]]:
    return [request.scopes for request in requests_since]


def test_the_second_replica_takes_the_token_the_first_one_got(shared, upstream, images):
    token_server = upstream.token_server
    first, second = replica(upstream, shared), replica(upstream, shared)

    before = token_server.request_count
    assert first.get_manifest("library/small", "1").content == images.small.manifest
    assert token_server.request_count == before + 1, "the first replica asks the token service"

    assert second.get_manifest("library/small", "1").content == images.small.manifest
    assert second.head_blob("library/small", images.small.layers[0].digest).status == 200
    assert token_server.request_count == before + 1, "the second replica asks nobody but the registry"

    # Another repository is another scope: one token for it, again shared.
    assert second.get_manifest("library/multi", "1").status == 200
    assert first.get_manifest("library/multi", "1").status == 200
    assert token_server.request_count == before + 2
    assert pull_scopes(token_server.requests[-2:]) == [
        ("repository:library/small:pull",),
        ("repository:library/multi:pull",),
    ]


def test_without_redis_each_replica_asks_for_its_own(settings, upstream, images):
    settings.REDIS_URL = ""
    assert tokencache.shared_tokens() is None
    token_server = upstream.token_server
    first, second = replica(upstream, None), replica(upstream, None)
    before = token_server.request_count
    first.get_manifest("library/small", "1")
    first.get_manifest("library/small", "1")
    assert token_server.request_count == before + 1, "a process keeps its token"
    second.get_manifest("library/small", "1")
    assert token_server.request_count == before + 2


def test_tokens_are_kept_per_account_and_encrypted(shared, upstream, images):
    first = replica(upstream, shared)
    first.get_manifest("library/small", "1")
    token, seconds = shared.get(upstream.url, upstream.username, "repository:library/small:pull")
    assert 0 < seconds <= 300 and token.count(".") == 2, "a JWT, good for a while"
    stored = redis.Redis.from_url(REDIS_URL).get(
        shared.key(upstream.url, upstream.username, "repository:library/small:pull")
    )
    assert token.encode() not in stored, "Redis never holds the token in clear"
    assert (
        0
        < redis.Redis.from_url(REDIS_URL).pttl(
            shared.key(upstream.url, upstream.username, "repository:library/small:pull")
        )
        <= seconds * 1000 + 1000
    ), "it leaves Redis when it expires"

    before = upstream.token_server.request_count
    anonymous = UpstreamClient(upstream.url, shared_tokens=shared)
    assert shared.get(upstream.url, "", "repository:library/small:pull") is None
    assert anonymous.get_manifest("library/small", "1").status == 200  # a public repository
    assert upstream.token_server.request_count == before + 1, "another account never takes this one's token"
    assert upstream.token_server.requests[-1].user is None


def test_a_shared_token_the_upstream_refuses_is_replaced(shared, upstream, images):
    scope = "repository:library/small:pull"
    shared.put(upstream.url, upstream.username, scope, "not-a-token", 60)
    before = upstream.token_server.request_count
    client = replica(upstream, shared)
    assert client.get_manifest("library/small", "1").content == images.small.manifest
    assert upstream.token_server.request_count == before + 1
    assert shared.get(upstream.url, upstream.username, scope)[0] != "not-a-token", "the good one is shared now"


def test_a_redis_that_does_not_answer_is_a_cache_miss(settings, upstream, images):
    dead = SharedTokens(f"redis://127.0.0.1:{free_port()}/0")
    before = upstream.token_server.request_count
    client = replica(upstream, dead)
    assert client.get_manifest("library/small", "1").content == images.small.manifest
    assert client.get_manifest("library/small", "1").status == 200
    assert upstream.token_server.request_count == before + 1, "the process's own memory still holds it"


def test_a_hung_redis_is_waited_on_once_and_said_once(settings, caplog):
    from registry import redisclients
    from tests.support.tcp_relay import TcpRelay

    hung = TcpRelay().start()  # accepts, never answers: Redis frozen
    settings.MIRROR_REDIS_TIMEOUT = 0.5
    redisclients.forget()
    try:
        tokens = SharedTokens(f"redis://{hung.address}/0")
        for _ in range(5):
            assert tokens.get("https://upstream.example", "bot", "repository:library/small:pull") is None
            tokens.put("https://upstream.example", "bot", "repository:library/small:pull", "token", 60)
        assert hung.connections == 1, "known down: not asked again by every pull"
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(said) == 1 and "tokens are not shared" in said[0], said
    finally:
        redisclients.forget()
        hung.stop()
