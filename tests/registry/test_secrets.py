"""Account secrets are encrypted at rest, with a key from settings that can be rotated."""

from __future__ import annotations

from django.db import connection
import pytest

from registry import secrets
from registry.models import Upstream, UpstreamAccount

SECRET = "dckr_pat_s3cr3t-value-that-must-not-leak"


@pytest.fixture
def key(settings):
    settings.MIRROR_SECRET_KEY = "first key"
    settings.MIRROR_SECRET_KEY_FALLBACKS = []
    return settings


def test_round_trip_and_no_clear_text(key):
    token = secrets.encrypt(SECRET)
    assert SECRET not in token and "s3cr3t" not in token
    assert secrets.decrypt(token) == SECRET
    assert secrets.encrypt(SECRET) != token, "a fresh IV each time: equal secrets do not look equal"


def test_the_key_can_be_rotated(key):
    old = secrets.encrypt(SECRET)
    key.MIRROR_SECRET_KEY = "second key"
    with pytest.raises(secrets.SecretUnreadable):
        secrets.decrypt(old)
    assert secrets.decrypt_or_none(old) is None
    key.MIRROR_SECRET_KEY_FALLBACKS = ["first key"]
    assert secrets.decrypt(old) == SECRET
    assert secrets.decrypt(secrets.encrypt(SECRET)) == SECRET


def test_without_a_mirror_key_it_derives_from_django_secret_key(settings):
    settings.MIRROR_SECRET_KEY = ""
    settings.SECRET_KEY = "django secret"
    token = secrets.encrypt(SECRET)
    settings.SECRET_KEY = "another django secret"
    assert secrets.decrypt_or_none(token) is None


@pytest.mark.django_db
def test_the_database_holds_no_clear_text(key):
    upstream = Upstream.objects.create(name="ghcr", url="https://ghcr.io")
    account = UpstreamAccount(upstream=upstream, username="bot")
    account.set_secret(SECRET)
    account.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM registry_upstreamaccount")
        rows = cursor.fetchall()
    assert rows and all(SECRET not in str(value) for row in rows for value in row)
    assert UpstreamAccount.objects.get().get_secret() == SECRET
