"""The settings' loader: typed values, the defaults (derived ones too), django-environ's parsing,
and errors that name the variable."""

import dataclasses
from pathlib import Path
import subprocess
import sys

import pytest

from mirrorsite.config import ConfigError, Settings, load
from mirrorsite.config.schema import PROJECT_DIR
from tests.support.mirror import PROJECT_ROOT


def test_the_defaults_of_an_empty_environment():
    settings = load({})
    assert settings.MIRROR_DATA_DIR == PROJECT_DIR / "data"
    assert settings.DATABASE_URL["ENGINE"] == "django.db.backends.sqlite3"
    assert settings.DATABASE_URL["NAME"] == str(PROJECT_DIR / "data" / "db.sqlite3")
    assert settings.REGISTRY_HTTP_ADDR == "0.0.0.0:5000"
    assert (settings.MIRROR_WEB_WORKERS, settings.MIRROR_WEB_THREADS, settings.MIRROR_WEB_GRACEFUL_TIMEOUT) == (
        2,
        32,
        10,
    )
    assert settings.MIRROR_ACCESS_LOG is True and settings.MIRROR_HTTPS is False
    assert settings.MIRROR_LOG_LEVEL == "INFO"
    assert settings.DJANGO_ALLOWED_HOSTS == ("*",) and settings.MIRROR_TRUSTED_PROXIES == ()
    assert settings.MIRROR_GC_TEMP_FILE_AGE == 3600 + 300
    assert settings.CELERY_BROKER_URL == settings.MIRROR_STATS_REDIS_URL == ""
    assert (settings.MIRROR_LOGIN_ATTEMPTS, settings.MIRROR_LOGIN_LOCKOUT) == (5, 900)
    assert settings.MIRROR_TAG_MAX_STALENESS == 30 * 24 * 3600
    assert isinstance(settings.MIRROR_LOCK_TTL, float) and isinstance(settings.MIRROR_TAG_TTL, int)


def test_derived_defaults_follow_what_they_derive_from_and_yield_to_their_own_variable():
    settings = load(
        {
            "MIRROR_DATA_DIR": "/srv/mirror",
            "MIRROR_FILL_TIMEOUT": "100",
            "REDIS_URL": "redis://r/1",
            "REGISTRY_HTTP_TLS_CERTIFICATE": "/c.pem",
            "MIRROR_ADMIN_LOGIN_ATTEMPTS": "3",
            "MIRROR_ADMIN_LOGIN_LOCKOUT": "7",
        }
    )
    assert settings.DATABASE_URL["NAME"] == "/srv/mirror/db.sqlite3"
    assert settings.MIRROR_GC_TEMP_FILE_AGE == 400
    assert settings.CELERY_BROKER_URL == settings.MIRROR_STATS_REDIS_URL == "redis://r/1"
    assert settings.MIRROR_HTTPS is True
    assert (settings.MIRROR_LOGIN_ATTEMPTS, settings.MIRROR_LOGIN_LOCKOUT) == (3, 7)
    own = load(
        {
            "REDIS_URL": "redis://r/1",
            "CELERY_BROKER_URL": "",
            "MIRROR_STATS_REDIS_URL": "",
            "MIRROR_GC_TEMP_FILE_AGE": "11",
            "REGISTRY_HTTP_TLS_CERTIFICATE": "/c.pem",
            "MIRROR_HTTPS": "false",
            "MIRROR_ADMIN_LOGIN_ATTEMPTS": "3",
            "MIRROR_LOGIN_ATTEMPTS": "9",
        }
    )
    assert own.CELERY_BROKER_URL == own.MIRROR_STATS_REDIS_URL == ""
    assert (own.MIRROR_GC_TEMP_FILE_AGE, own.MIRROR_HTTPS, own.MIRROR_LOGIN_ATTEMPTS) == (11, False, 9)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True), ("false", False)]
    + [("0", False), ("no", False), ("Off", False), ("", False)],
)
def test_booleans(raw, value):
    assert load({"MIRROR_AUTH": raw}).MIRROR_AUTH is value
    assert load({"MIRROR_ACCESS_LOG": raw}).MIRROR_ACCESS_LOG is value


def test_lists_are_comma_separated_and_case_is_folded_where_declared():
    settings = load(
        {
            "MIRROR_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1/32",
            "MIRROR_UPSTREAM_HOSTS": "",
            "MIRROR_STORAGE": "S3",
            "MIRROR_LOG_LEVEL": "debug",
        }
    )
    assert settings.MIRROR_TRUSTED_PROXIES == ("10.0.0.0/8", "127.0.0.1/32")
    assert settings.MIRROR_UPSTREAM_HOSTS == ()
    assert (settings.MIRROR_STORAGE, settings.MIRROR_LOG_LEVEL) == ("s3", "DEBUG")


def test_database_urls_are_django_environs():
    database = load({"DATABASE_URL": "postgres://user:secret@db:5432/mirrorsite?connect_timeout=2"}).DATABASE_URL
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"], database["NAME"], database["USER"]) == (
        "db",
        5432,
        "mirrorsite",
        "user",
    )
    assert database["OPTIONS"] == {"connect_timeout": 2}


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("MIRROR_WEB_WORKERS", "two", "not an integer"),
        ("MIRROR_LOCK_TTL", "soon", "not a number"),
        ("MIRROR_AUTH", "perhaps", "not a boolean"),
        ("MIRROR_FILL_TIMEOUT", "", "not an integer"),
    ],
)
def test_a_malformed_value_is_an_error_naming_its_variable(name, raw, expected):
    with pytest.raises(ConfigError, match=rf"^{name}={raw!r} is {expected}"):
        load({name: raw})


def test_the_settings_are_frozen():
    settings = load({})
    assert isinstance(settings, Settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.MIRROR_TAG_TTL = 1


def test_gunicorn_reads_the_schema_without_django(tmp_path: Path):
    probe = (
        "import runpy, sys\n"
        "conf = runpy.run_path('mirrorsite/gunicorn_conf.py')\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "print(conf['bind'], conf['workers'], conf['threads'], conf['graceful_timeout'], conf['accesslog'],"
        " conf['loglevel'], conf['certfile'], conf['keyfile'])\n"
    )
    environment = {
        "PATH": "/usr/bin:/bin",
        "MIRROR_DATA_DIR": str(tmp_path),
        "REGISTRY_HTTP_ADDR": "127.0.0.1:9",
        "MIRROR_WEB_WORKERS": "3",
        "MIRROR_WEB_THREADS": "4",
        "MIRROR_WEB_GRACEFUL_TIMEOUT": "5",
        "MIRROR_ACCESS_LOG": "off",
        "MIRROR_LOG_LEVEL": "WARNING",
        "REGISTRY_HTTP_TLS_CERTIFICATE": "/c.pem",
        "REGISTRY_HTTP_TLS_KEY": "/k.pem",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['127.0.0.1:9']", "3", "4", "5", "None", "warning", "/c.pem", "/k.pem"]
    broken = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        env={**environment, "MIRROR_WEB_WORKERS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode != 0 and "MIRROR_WEB_WORKERS='many' is not an integer" in broken.stderr
