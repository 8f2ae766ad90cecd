"""/v2/token in this process against the session's real upstream: bounded scopes, no upstream
contact at issuance, and wrong passwords limited (429 with Retry-After, registry JSON)."""

from __future__ import annotations

import base64
import json

import pytest

from access.models import RepositoryVisibility

pytestmark = pytest.mark.django_db(transaction=True)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def limits(settings):
    settings.MIRROR_LOGIN_ATTEMPTS = 3
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 100
    settings.MIRROR_LOGIN_LOCKOUT = 600
    settings.REDIS_URL = ""


def test_too_many_scopes_are_refused_before_anything_else(client, hub, images, alice, auth_on, settings):
    settings.MIRROR_AUTH_MAX_SCOPES = 4
    mark = images.upstream.log_mark()
    scopes = [f"repository:library/r{n}:pull" for n in range(5)]
    refused = client.get("/v2/token", {"service": "mirror.test", "scope": scopes})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "too many scopes: 5 in one request, at most 4",
    }
    packed = client.get("/v2/token", {"service": "mirror.test", "scope": " ".join(scopes)})
    assert packed.status_code == 400
    oauth = client.post("/v2/token", {"grant_type": "password", "username": "alice", "password": "x", "scope": scopes})
    assert oauth.status_code == 400, "refused before the password is checked"
    assert client.get("/v2/token", {"service": "mirror.test", "scope": scopes[:4]}).status_code == 200
    assert images.upstream.access_log(since=mark) == []


def test_issuing_a_token_asks_the_upstream_nothing(client, hub, images, auth_on):
    mark = images.upstream.log_mark()
    scopes = ["repository:library/small:pull", "repository:private/secret:pull", "repository:library/never-pushed:pull"]
    issued = client.get("/v2/token", {"service": "mirror.test", "scope": scopes})
    assert issued.status_code == 200
    assert images.upstream.access_log(since=mark) == [], "no visibility check at issuance"
    assert not RepositoryVisibility.objects.exists(), "nothing recorded"
    pulled = client.get("/v2/library/small/manifests/1", HTTP_AUTHORIZATION=f"Bearer {issued.json()['token']}")
    assert pulled.status_code == 200, "the pull decides, asking the upstream"
    assert RepositoryVisibility.objects.get(repository="library/small").public


def test_wrong_passwords_on_the_token_endpoint_end_in_429(client, alice, auth_on, limits):
    for _ in range(3):
        assert client.get("/v2/token", HTTP_AUTHORIZATION=basic("alice", "wrong")).status_code == 401
    refused = client.get("/v2/token", HTTP_AUTHORIZATION=basic("alice", "alice-password"))
    assert refused.status_code == 429 and refused["Retry-After"] == "600"
    assert json.loads(refused.content)["errors"][0]["code"] == "TOOMANYREQUESTS"
    oauth = client.post("/v2/token", {"grant_type": "password", "username": "alice", "password": "alice-password"})
    assert oauth.status_code == 429, "the OAuth grant counts with the same limiter"
    on_v2 = client.get("/v2/", HTTP_AUTHORIZATION=basic("alice", "alice-password"))
    assert on_v2.status_code == 429 and on_v2["Retry-After"] == "600"
    assert on_v2["Docker-Distribution-API-Version"] == "registry/2.0"
