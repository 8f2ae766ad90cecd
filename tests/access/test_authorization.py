"""Who may pull what through /v2/, in this process against the session's real upstream
(Distribution with token auth; private/secret is served only to the mirror's account)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
import json

import pytest
from rest_framework.authtoken.models import Token

from access import tokens, visibility
from access.models import AccessRule, Policy, RepositoryVisibility

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE = "/v2/private/secret/manifests/1"
PUBLIC = "/v2/library/small/manifests/1"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def error_code(response) -> str:
    return json.loads(response.content)["errors"][0]["code"]


def token_for(client, authorization: str | None = None, scope: str = "repository:private/secret:pull") -> str:
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/v2/token", {"service": "mirror.test", "scope": scope}, **extra)
    assert response.status_code == 200, response.content
    return response.json()["token"]


def get(client, path: str, authorization: str | None = None):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get(path, **extra)
    if response.streaming:
        b"".join(response.streaming_content)
        response.close()
    return response


# --- authentication off (the default) ------------------------------------------------------
def test_auth_off_private_repository_is_never_served_anonymously(client, hub, images):
    refused = get(client, PRIVATE)
    assert refused.status_code == 403 and error_code(refused) == "DENIED"
    assert get(client, PUBLIC).status_code == 200, "public repositories stay open"
    recorded = dict(RepositoryVisibility.objects.values_list("repository", "public"))
    assert recorded == {"private/secret": False, "library/small": True}


def test_auth_off_credentials_are_ignored_and_token_endpoint_is_absent(client, hub, images, alice):
    assert get(client, PRIVATE, basic("alice", "alice-password")).status_code == 403
    assert client.get("/v2/token").status_code == 404


def test_public_rule_opens_a_private_repository(client, hub, images):
    AccessRule.objects.create(pattern="private/*", policy=Policy.PUBLIC)
    opened = get(client, PRIVATE)
    assert opened.status_code == 200 and opened.content == images.private.manifest
    layer = images.private.layers[0]
    assert get(client, f"/v2/private/secret/blobs/{layer.digest}").status_code == 200


def test_cached_private_repository_stays_closed_to_anonymous(client, settings, hub, images, alice, auth_on):
    assert get(client, PRIVATE, basic("alice", "alice-password")).status_code == 200  # now cached
    layer = images.private.layers[0]
    assert get(client, f"/v2/private/secret/blobs/{layer.digest}", basic("alice", "alice-password")).status_code == 200
    for path in (PRIVATE, f"/v2/private/secret/blobs/{layer.digest}", "/v2/private/secret/tags/list"):
        refused = get(client, path, f"Bearer {token_for(client)}")
        assert refused.status_code == 401, path
        assert 'scope="repository:private/secret:pull"' in refused["WWW-Authenticate"]
    settings.MIRROR_AUTH = False
    assert get(client, PRIVATE).status_code == 403


def test_catalog_lists_only_what_the_client_may_pull(client, hub, images, alice, auth_on):
    for path in (PRIVATE, PUBLIC):
        assert get(client, path, basic("alice", "alice-password")).status_code == 200
    anonymous = f"Bearer {token_for(client)}"
    listed = client.get("/v2/_catalog", HTTP_AUTHORIZATION=anonymous)
    assert listed.json()["repositories"] == [], "a listing never asks the upstream: unknown counts as private"
    assert get(client, PUBLIC, anonymous).status_code == 200  # the upstream was asked: public
    listed = client.get("/v2/_catalog", HTTP_AUTHORIZATION=anonymous)
    assert listed.json()["repositories"] == ["library/small"]
    logged_in = client.get("/v2/_catalog", HTTP_AUTHORIZATION=basic("alice", "alice-password"))
    assert logged_in.json()["repositories"] == ["library/small", "private/secret"]


# --- authentication on ----------------------------------------------------------------------
def test_base_wants_credentials_with_a_bearer_challenge(client, auth_on, alice):
    response = client.get("/v2/", HTTP_HOST="mirror.example:5000")
    assert response.status_code == 401 and error_code(response) == "UNAUTHORIZED"
    assert response["WWW-Authenticate"] == 'Bearer realm="http://mirror.example:5000/v2/token",service="mirror.test"'
    assert response["Docker-Distribution-API-Version"] == "registry/2.0"
    assert get(client, "/v2/", f"Bearer {token_for(client, basic('alice', 'alice-password'))}").status_code == 200
    assert get(client, "/v2/", f"Bearer {token_for(client)}").status_code == 200, "an anonymous token will do"


def test_realm_behind_a_trusted_tls_front(client, settings, auth_on):
    settings.MIRROR_TRUSTED_PROXIES = ["127.0.0.1/32"]
    response = client.get("/v2/", HTTP_HOST="mirror.example", HTTP_X_FORWARDED_PROTO="https")
    assert 'realm="https://mirror.example/v2/token"' in response["WWW-Authenticate"]
    settings.MIRROR_TRUSTED_PROXIES = []
    response = client.get("/v2/", HTTP_HOST="mirror.example", HTTP_X_FORWARDED_PROTO="https")
    assert 'realm="http://mirror.example/v2/token"' in response["WWW-Authenticate"], "only a trusted proxy says"
    settings.MIRROR_AUTH_REALM = "https://auth.example/token"
    assert 'realm="https://auth.example/token"' in client.get("/v2/")["WWW-Authenticate"]


def test_anonymous_then_login(client, hub, images, alice, auth_on):
    anonymous = get(client, PRIVATE)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == (
        'Bearer realm="http://testserver/v2/token",service="mirror.test",'
        'scope="repository:private/secret:pull",error="insufficient_scope"'
    )
    assert get(client, PRIVATE, f"Bearer {token_for(client)}").status_code == 401
    token = token_for(client, basic("alice", "alice-password"))
    claims = tokens.verify(token)
    assert claims["sub"] == "alice"
    assert claims["access"] == [{"type": "repository", "name": "private/secret", "actions": ["pull"]}]
    pulled = get(client, PRIVATE, f"Bearer {token}")
    assert pulled.status_code == 200 and pulled.content == images.private.manifest


def test_public_repository_needs_no_login(client, hub, images, auth_on):
    assert get(client, PUBLIC).status_code == 200


def test_token_endpoint_refuses_bad_credentials(client, alice, auth_on):
    for authorization in (basic("alice", "wrong"), basic("nobody", "x"), "Basic !!!", "Bearer nonsense"):
        response = client.get("/v2/token", {"service": "mirror.test"}, HTTP_AUTHORIZATION=authorization)
        assert response.status_code == 401, authorization
        assert error_code(response) == "UNAUTHORIZED"
    assert client.get("/v2/token", {"service": "elsewhere"}).status_code == 400
    alice.is_active = False
    alice.save()
    assert client.get("/v2/token", HTTP_AUTHORIZATION=basic("alice", "alice-password")).status_code == 401


def test_api_token_as_password(client, hub, images, alice, auth_on):
    key = Token.objects.create(user=alice).key
    token = token_for(client, basic("alice", key))
    assert tokens.verify(token)["sub"] == "alice"
    assert get(client, PRIVATE, basic("alice", key)).status_code == 200, "Basic on /v2/ too"
    assert client.get("/v2/token", HTTP_AUTHORIZATION=basic("bob", key)).status_code == 401, "the token's own user only"


def test_oauth_password_grant(client, alice, auth_on):
    response = client.post(
        "/v2/token",
        {
            "grant_type": "password",
            "username": "alice",
            "password": "alice-password",
            "service": "mirror.test",
            "scope": "repository:library/small:pull",
            "client_id": "containerd",
        },
    )
    assert response.status_code == 200
    assert tokens.verify(response.json()["access_token"])["sub"] == "alice"
    assert response.json()["scope"] == "repository:library/small:pull"
    wrong = client.post("/v2/token", {"grant_type": "password", "username": "alice", "password": "nope"})
    assert wrong.status_code == 401
    refresh = client.post("/v2/token", {"grant_type": "refresh_token", "refresh_token": "x"})
    assert refresh.status_code == 400, "clients then fall back to GET"


def test_basic_on_v2_can_be_turned_off(client, settings, hub, images, alice, auth_on):
    settings.MIRROR_AUTH_BASIC = False
    refused = get(client, PRIVATE, basic("alice", "alice-password"))
    assert refused.status_code == 401 and 'error="invalid_token"' in refused["WWW-Authenticate"]


def test_expired_forged_and_tampered_tokens_are_refused(client, hub, images, alice, auth_on):
    expired = tokens.issue("alice", [], lifetime=30, now=datetime.now(UTC) - timedelta(minutes=2)).token
    good = token_for(client, basic("alice", "alice-password"))
    header, payload, signature = good.split(".")
    forged = tokens.jwt.encode(tokens.verify(good), b"not the mirror's key", algorithm="HS256")
    tampered = f"{header}.{payload[:-2]}{'AB' if payload[-2:] != 'AB' else 'CD'}.{signature}"
    for token in (expired, forged, tampered):
        response = get(client, PRIVATE, f"Bearer {token}")
        assert response.status_code == 401 and error_code(response) == "UNAUTHORIZED"
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert get(client, PRIVATE, f"Bearer {good}").status_code == 200


def test_group_rule(client, hub, images, alice, bob, builders, auth_on):
    rule = AccessRule.objects.create(pattern="library/small", policy=Policy.GROUPS)
    rule.groups.add(builders)
    outsider = get(client, PUBLIC, basic("bob", "bob-password"))
    assert outsider.status_code == 403 and error_code(outsider) == "DENIED"
    assert get(client, PUBLIC).status_code == 401, "anonymous: a login might help"
    assert get(client, PUBLIC, basic("alice", "alice-password")).status_code == 200
    bob_token = tokens.verify(token_for(client, basic("bob", "bob-password"), "repository:library/small:pull"))
    assert bob_token["access"] == [], "the token grants only what the rules allow"


def test_rules_apply_per_upstream_and_alias_names(client, hub, images, alice, auth_on):
    hub.alias = "hub"
    hub.save()
    AccessRule.objects.create(pattern="library/*", upstream=hub, policy=Policy.AUTHENTICATED)
    refused = get(client, "/v2/hub/library/small/manifests/1")
    assert refused.status_code == 401
    assert 'scope="repository:hub/library/small:pull"' in refused["WWW-Authenticate"], "the client's own name"
    assert get(client, "/v2/hub/library/small/manifests/1", basic("alice", "alice-password")).status_code == 200


def test_registry_user_is_set_for_the_audit_log(rf, hub, alice, auth_on):
    from access.authorization import authorize
    from registry.upstreams import routing

    request = rf.get(PUBLIC, HTTP_AUTHORIZATION=basic("alice", "alice-password"))
    authorize(request, routing.route(request, "library/small"))
    assert request.registry_user == alice
    anonymous = rf.get(PUBLIC)
    authorize(anonymous, routing.route(anonymous, "library/small"))
    assert anonymous.registry_user is None


def test_missing_repository_is_404_as_the_upstream_tells_anonymous_clients(client, hub, images, alice, auth_on):
    missing = get(client, "/v2/library/never-pushed/manifests/1")
    assert missing.status_code == 404 and error_code(missing) == "NAME_UNKNOWN"
    assert not RepositoryVisibility.objects.filter(repository="library/never-pushed").exists()
    assert get(client, "/v2/library/never-pushed/manifests/1", basic("alice", "alice-password")).status_code == 404


def test_upstream_down_no_answer_no_anonymous_pull(client, settings, hub, images):
    RepositoryVisibility.objects.create(
        upstream=hub, repository="library/small", public=True, checked_at=datetime.now(UTC) - timedelta(days=9)
    )
    assert get(client, PUBLIC).status_code == 200, "an old answer, while the upstream answers, is asked again"
    images.upstream.stop()
    try:
        settings.MIRROR_VISIBILITY_TTL = 0  # every recorded answer is out of date
        visibility.forget()  # and none remembered in this process
        assert get(client, PUBLIC).status_code == 200, "cached, and public when last asked: still served"
        missing = get(client, "/v2/library/never-asked/manifests/1")
        assert missing.status_code == 503 and error_code(missing) == "UNAVAILABLE"
        assert not RepositoryVisibility.objects.filter(repository="library/never-asked").exists()
    finally:
        images.upstream.start()


def test_a_repository_the_upstream_patterns_exclude_is_never_asked_about(client, hub, images):
    hub.deny_repositories = "private/*"
    hub.save()
    mark = images.upstream.log_mark()
    refused = get(client, PRIVATE)
    assert refused.status_code == 403 and error_code(refused) == "DENIED"
    assert images.upstream.access_log(since=mark) == [], "denied repositories are never asked about"


def test_a_failed_visibility_check_is_not_remembered(client, hub, images):
    """The upstream down, then back: the very next anonymous request is asked about, and served."""
    images.upstream.stop()
    try:
        for _ in range(2):
            down = get(client, PUBLIC)
            assert down.status_code == 503 and error_code(down) == "UNAVAILABLE"
    finally:
        images.upstream.start()
    mark = images.upstream.log_mark()
    assert get(client, PUBLIC).status_code == 200
    assert images.upstream.access_log(since=mark), "asked again at once"


def test_a_pull_checks_the_name_and_the_upstream_patterns_once(client, hub, images, monkeypatch):
    """The route checks the name when it is made; the access policy asks it for the upstream's
    name (the allow and deny patterns), and the proxy finds the answer kept."""
    from registry import oci
    from registry.models import Upstream

    checks = {"name": 0, "patterns": 0}
    validate_name, allows = oci.validate_name, Upstream.allows

    def counted_validate_name(name):
        checks["name"] += 1
        return validate_name(name)

    def counted_allows(upstream, repository):
        checks["patterns"] += 1
        return allows(upstream, repository)

    monkeypatch.setattr(oci, "validate_name", counted_validate_name)
    monkeypatch.setattr(Upstream, "allows", counted_allows)
    layer = images.small.layers[0]
    for path in (PUBLIC, f"/v2/library/small/blobs/{layer.digest}", "/v2/library/small/tags/list"):
        checks.update(name=0, patterns=0)
        assert get(client, path).status_code == 200, path
        assert checks == {"name": 1, "patterns": 1}, path
