"""MIRROR_ALLOWED_NETWORKS: clients outside get 403 on everything but /healthz."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def allow_list(settings):
    settings.MIRROR_ALLOWED_NETWORKS = ["192.0.2.0/24", "2001:db8::/32"]
    settings.MIRROR_TRUSTED_PROXIES = ["127.0.0.1/32"]
    settings.MIRROR_METRICS_TOKEN = ""


def test_forwarded_client_outside_the_list_is_denied_everywhere(client):
    outside = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for path in ("/v2/", "/v2/library/alpine/manifests/latest", "/v2/token", "/v2/_catalog"):
        response = client.get(path, **outside)
        assert response.status_code == 403, path
        assert json.loads(response.content)["errors"][0]["code"] == "DENIED"
        assert response["Docker-Distribution-API-Version"] == "registry/2.0"
    head = client.head("/v2/library/alpine/manifests/latest", **outside)
    assert head.status_code == 403 and head.content == b""
    for path in ("/metrics", "/admin/", "/admin/login/", "/api/stats/summary/", "/readyz"):
        assert client.get(path, **outside).status_code == 403, path
    assert client.get("/healthz", **outside).status_code == 200, "health checks say nothing"


def test_forwarded_client_inside_the_list_is_served(client):
    assert client.get("/v2/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.10").status_code == 200
    assert client.get("/v2/", REMOTE_ADDR="2001:db8::5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.11").status_code == 200


def test_an_untrusted_peer_cannot_claim_an_allowed_address(client):
    response = client.get("/v2/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="192.0.2.10")
    assert response.status_code == 403


def test_the_proxy_itself_is_not_a_client_unless_listed(client):
    assert client.get("/v2/", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/v2/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="not-an-address").status_code == 403


def test_no_list_admits_everyone(client, settings):
    settings.MIRROR_ALLOWED_NETWORKS = []
    assert client.get("/v2/", REMOTE_ADDR="198.51.100.7").status_code == 200


def test_every_request_has_a_registry_user_even_when_refused(rf, settings):
    from access.middleware import AllowedNetworksMiddleware

    seen = []
    middleware = AllowedNetworksMiddleware(lambda request: seen.append(request.registry_user) or None)
    refused = rf.get("/v2/", REMOTE_ADDR="198.51.100.7")
    assert middleware(refused).status_code == 403 and refused.registry_user is None
    middleware(rf.get("/v2/", REMOTE_ADDR="192.0.2.1"))
    assert seen == [None]
