"""Every client of the mirror's own dependencies, as the settings build it, gives up within its
stated timeout: Django's Redis cache (the API's throttles), the Celery broker, PostgreSQL (connecting,
and statements), each tried in a fresh process with only the environment given."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from tests.support.databases import postgres_session_url, with_database_name
from tests.support.tcp_relay import TcpRelay

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECRET = "dependency-timeouts-tests-only-" + "k" * 40


def in_django(code: str, tmp_path: Path, **env: str) -> dict:
    """Run `code` (which sets `result`) with the mirror's settings; `result` as JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MIRROR_", "REGISTRY_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        clean.pop(name, None)
    clean.update(
        MIRROR_DATA_DIR=str(tmp_path / "data"),
        DJANGO_SETTINGS_MODULE="mirrorsite.settings",
        DJANGO_SECRET_KEY=SECRET,
        **env,
    )
    script = f"import json, django; django.setup()\n{code}\nprint(json.dumps(result))"
    # The timeout is the test's verdict on a hang: the clients must give up well before it.
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def hung_server():
    relay = TcpRelay().start()  # accepts, never answers
    yield relay
    relay.stop()


def test_the_api_throttle_cache_gives_up_on_a_hung_redis(hung_server, tmp_path):
    code = """
from django.core.cache import caches
try:
    caches["api-throttle"].get("throttle:x")
    result = "answered"
except Exception as error:
    result = type(error).__name__
"""
    assert (
        in_django(code, tmp_path, REDIS_URL=f"redis://{hung_server.address}/0", MIRROR_REDIS_TIMEOUT="0.5")
        == "TimeoutError"
    )


def test_the_broker_gives_up_on_a_hung_redis(hung_server, tmp_path):
    code = """
from mirrorsite.celery import app
with app.connection_for_write() as connection:
    try:
        connection.default_channel.client.ping()
        result = "answered"
    except Exception as error:
        result = f"{type(error).__name__}: {error}"
"""
    answer = in_django(code, tmp_path, REDIS_URL=f"redis://{hung_server.address}/0", MIRROR_REDIS_TIMEOUT="0.5")
    assert answer.startswith("OperationalError") and "Timeout" in answer, answer  # kombu's name for it


def test_connecting_to_a_hung_postgres_gives_up(hung_server, tmp_path):
    code = """
from django.db import DatabaseError, connection
try:
    connection.ensure_connection()
    result = "connected"
except DatabaseError as error:
    result = type(error).__name__
"""
    url = f"postgres://mirror@{hung_server.address}/mirror"
    assert in_django(code, tmp_path, DATABASE_URL=url) == "OperationalError"
    assert hung_server.connections == 1


def test_postgres_cancels_a_statement_past_the_statement_timeout(tmp_path):
    code = """
from django.db import DatabaseError, connection
try:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(30)")
    result = "finished"
except DatabaseError as error:
    result = str(error).strip().splitlines()[0]
"""
    url = with_database_name(postgres_session_url("timeouts"), "postgres")
    answer = in_django(code, tmp_path, DATABASE_URL=url, MIRROR_DATABASE_STATEMENT_TIMEOUT="0.5")
    assert "statement timeout" in answer


def test_postgres_options_can_be_left_to_the_database_url(tmp_path):
    code = "from django.conf import settings\nresult = settings.DATABASES['default']['OPTIONS']"
    url = "postgres://mirror@127.0.0.1:5432/mirror?connect_timeout=9"
    options = in_django(code, tmp_path, DATABASE_URL=url, MIRROR_DATABASE_STATEMENT_TIMEOUT="0")
    assert options["connect_timeout"] == 9 and "options" not in options, "behind PgBouncer: no startup option"
    assert options["keepalives"] == 1
