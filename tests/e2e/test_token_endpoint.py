"""The token endpoint of a real mirror with client authentication on, its upstream behind a
proxy that counts every request: a token request names a bounded number of scopes, issuing a
token asks the upstream nothing (visibility is decided when the repository is pulled), and
the mirror's tokens hold across a little clock skew between replicas."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from access import tokens
from tests.support.fault_proxy import FaultProxy
from tests.support.images import MANIFEST_ACCEPT
from tests.support.mirror import MirrorProcess

SERVICE = "token-e2e"
TOKEN_KEY = "token-e2e-key"
MAX_SCOPES = 10  # the default
SETUP = 'from django.contrib.auth.models import User; User.objects.create_user("alice", password="alice-password")'


@pytest.fixture(scope="module")
def counted(upstream) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def mirror(counted, upstream, images, tmp_path_factory) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path_factory.mktemp("token-mirror") / "data",
        counted.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_AUTH="true",
        MIRROR_AUTH_SERVICE=SERVICE,
        MIRROR_AUTH_TOKEN_KEY=TOKEN_KEY,
    ).start()
    process.manage("shell", "-c", SETUP)
    yield process
    process.stop()


def scopes(count: int) -> list[tuple[str, str]]:
    return [("scope", f"repository:library/r{n}:pull") for n in range(count)]


def test_a_token_request_with_too_many_scopes_is_refused(mirror, counted, token_server):
    before, realm_before = counted.wait_quiet(), token_server.request_count
    # A GET's request line is bounded by the server anyway: 30 scopes fit in it.
    refused = requests.get(f"{mirror.url}/v2/token", params=[("service", SERVICE), *scopes(30)], timeout=30)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert f"too many scopes: 30 in one request, at most {MAX_SCOPES}" in refused.json()["error_description"]
    oauth = requests.post(
        f"{mirror.url}/v2/token",
        timeout=30,
        data=[("grant_type", "password"), ("username", "alice"), ("password", "alice-password"), *scopes(125)],
    )
    assert oauth.status_code == 400
    assert f"too many scopes: 125 in one request, at most {MAX_SCOPES}" in oauth.json()["error_description"]
    packed = requests.get(
        f"{mirror.url}/v2/token",
        params={"service": SERVICE, "scope": " ".join(v for _, v in scopes(MAX_SCOPES + 1))},
        timeout=30,
    )
    assert packed.status_code == 400, "scopes packed into one value count one by one"
    assert counted.count == before and token_server.request_count == realm_before, "the upstream was asked nothing"
    assert mirror.query("SELECT COUNT(*) FROM access_repositoryvisibility") == [(0,)]


def test_issuing_tokens_asks_the_upstream_nothing(mirror, counted, token_server, images):
    before, realm_before = counted.wait_quiet(), token_server.request_count
    anonymous = requests.get(f"{mirror.url}/v2/token", params=[("service", SERVICE), *scopes(MAX_SCOPES)], timeout=30)
    assert anonymous.status_code == 200 and anonymous.json()["token"]
    alice = requests.get(
        f"{mirror.url}/v2/token",
        auth=("alice", "alice-password"),
        timeout=30,
        params={"service": SERVICE, "scope": ["repository:library/small:pull", "repository:private/secret:pull"]},
    )
    assert alice.status_code == 200
    assert counted.count == before and token_server.request_count == realm_before, "no visibility check at issuance"
    assert mirror.query("SELECT COUNT(*) FROM access_repositoryvisibility") == [(0,)], "nothing written"

    # Pulled with the anonymous token, the repository's visibility is decided now.
    token = requests.get(
        f"{mirror.url}/v2/token", params={"service": SERVICE, "scope": "repository:library/small:pull"}, timeout=30
    ).json()["token"]
    pulled = requests.get(
        f"{mirror.url}/v2/library/small/manifests/1",
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT},
    )
    assert pulled.status_code == 200 and pulled.content == images.small.manifest
    assert counted.count > before, "the pull asked the upstream"
    assert mirror.query("SELECT repository, public FROM access_repositoryvisibility") == [("library/small", 1)]


def test_a_token_issued_slightly_in_the_future_holds(mirror, settings):
    """Another replica's clock is a little ahead: its fresh tokens are accepted here."""
    settings.MIRROR_AUTH_SERVICE, settings.MIRROR_AUTH_TOKEN_KEY = SERVICE, TOKEN_KEY  # the mirror's

    def status(token: str) -> int:
        return requests.get(f"{mirror.url}/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code

    now = datetime.now(UTC)
    assert status(tokens.issue("alice", [], now=now + timedelta(seconds=20)).token) == 200
    assert status(tokens.issue("alice", [], lifetime=60, now=now - timedelta(seconds=70)).token) == 200, (
        "expired 10 s ago"
    )
    assert status(tokens.issue("alice", [], now=now + timedelta(minutes=5)).token) == 401, "far in the future"
    assert status(tokens.issue("alice", [], lifetime=60, now=now - timedelta(minutes=5)).token) == 401
