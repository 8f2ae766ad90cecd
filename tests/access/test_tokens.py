"""The mirror's bearer tokens: signed, short-lived, for this service from this issuer."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
import json

import jwt
import pytest

from access import tokens


@pytest.fixture(autouse=True)
def key(settings):
    settings.MIRROR_AUTH_TOKEN_KEY = "token-test-key"
    settings.MIRROR_AUTH_SERVICE = "mirror.test"
    settings.MIRROR_AUTH_TOKEN_LIFETIME = 300


def test_issued_token_verifies_with_its_claims():
    access = [{"type": "repository", "name": "library/alpine", "actions": ["pull"]}]
    issued = tokens.issue("alice", access)
    claims = tokens.verify(issued.token)
    assert claims["sub"] == "alice" and claims["access"] == access
    assert claims["aud"] == "mirror.test" and claims["iss"] == tokens.ISSUER
    assert claims["exp"] - claims["iat"] == 300 == issued.expires_in
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


def test_key_is_derived_not_the_setting_itself(settings):
    assert tokens.signing_key() != b"token-test-key"
    settings.MIRROR_AUTH_TOKEN_KEY = ""
    settings.SECRET_KEY = "the-django-secret"
    from_secret = tokens.signing_key()
    settings.SECRET_KEY = "another-django-secret"
    assert tokens.signing_key() != from_secret, "without its own key, the key follows DJANGO_SECRET_KEY"


def test_expired_token_is_rejected():
    old = tokens.issue("alice", [], lifetime=60, now=datetime.now(UTC) - timedelta(minutes=5))
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(old.token)


def test_forged_token_is_rejected():
    claims = jwt.decode(tokens.issue("alice", []).token, options={"verify_signature": False})
    forged = jwt.encode(claims, b"some other key", algorithm="HS256")
    with pytest.raises(tokens.InvalidToken, match="Signature"):
        tokens.verify(forged)


def test_tampered_token_is_rejected():
    header, payload, signature = tokens.issue("alice", []).token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(f"{header}.{changed}.{signature}")


def test_unsigned_token_is_rejected():
    claims = jwt.decode(tokens.issue("alice", []).token, options={"verify_signature": False})
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(jwt.encode(claims, None, algorithm="none"))


def test_token_for_another_service_or_issuer_is_rejected(settings):
    other_service = tokens.issue("alice", []).token
    settings.MIRROR_AUTH_SERVICE = "elsewhere"
    with pytest.raises(tokens.InvalidToken, match="(?i)audience"):
        tokens.verify(other_service)
    claims = jwt.decode(tokens.issue("alice", []).token, options={"verify_signature": False})
    claims["iss"] = "someone-else"
    with pytest.raises(tokens.InvalidToken, match="(?i)issuer"):
        tokens.verify(jwt.encode(claims, tokens.signing_key(), algorithm="HS256"))


def test_token_without_expiry_is_rejected():
    claims = jwt.decode(tokens.issue("alice", []).token, options={"verify_signature": False})
    del claims["exp"]
    with pytest.raises(tokens.InvalidToken, match="exp"):
        tokens.verify(jwt.encode(claims, tokens.signing_key(), algorithm="HS256"))


def test_a_token_from_a_clock_slightly_ahead_or_behind_holds():
    """Replicas' clocks differ a little: a fresh token from one ahead is not refused."""
    now = datetime.now(UTC)
    assert tokens.verify(tokens.issue("alice", [], now=now + timedelta(seconds=20)).token)["sub"] == "alice"
    assert (
        tokens.verify(tokens.issue("alice", [], lifetime=60, now=now - timedelta(seconds=75)).token)["sub"] == "alice"
    )
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(tokens.issue("alice", [], now=now + timedelta(seconds=tokens.LEEWAY_SECONDS + 30)).token)
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(
            tokens.issue("alice", [], lifetime=60, now=now - timedelta(seconds=60 + tokens.LEEWAY_SECONDS + 30)).token
        )
