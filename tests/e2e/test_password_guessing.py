"""Password guessing, end to end: real mirror processes with client authentication on, guessed
at in parallel on /v2/token (GET with Basic, and the OAuth POST), Basic on /v2/, the admin login
form and the API. One limiter counts every check: at most the limit is evaluated, the rest are
refused with 429 (registry JSON and Retry-After on /v2/), the right password works once the
window is over, and two processes sharing a Redis share the count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
import itertools
import re
import threading
import time
import uuid

import pytest
import redis
import requests

from tests.support.celery_worker import forget_keys
from tests.support.mirror import MirrorProcess

LIMIT = 5
LOCKOUT = 8  # seconds: short, so a test can wait for the window to end
REDIS_URL = "redis://127.0.0.1:6379/12"
SETUP = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
for name in ("alice", "bob", "carol", "dave", "erin"):
    User.objects.create_user(name, password=f"{name}-password")
User.objects.create_superuser("root", "root@example.org", "root-password")
"""
LIMITS = {
    "MIRROR_AUTH": "true",
    "MIRROR_LOGIN_ATTEMPTS": str(LIMIT),
    "MIRROR_LOGIN_LOCKOUT": str(LOCKOUT),
    # The address limit is the unit tests' business: here every guess comes from 127.0.0.1.
    "MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS": "10000",
}


@pytest.fixture(scope="module")
def guarded(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    mirror = MirrorProcess(
        tmp_path_factory.mktemp("guessed-mirror") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        **LIMITS,
    ).start()
    mirror.manage("shell", "-c", SETUP)
    yield mirror
    mirror.stop()


@pytest.fixture(scope="module")
def replicas(upstream, tmp_path_factory) -> Iterator[list[MirrorProcess]]:
    """Two processes with databases of their own, sharing one Redis."""
    redis.Redis.from_url(REDIS_URL).ping()
    root = tmp_path_factory.mktemp("guessed-replicas")
    shared = {**LIMITS, "REDIS_URL": REDIS_URL, "MIRROR_REDIS_KEY_PREFIX": f"guessing-{uuid.uuid4().hex[:12]}:"}
    started = []
    try:
        for name in ("a", "b"):
            process = MirrorProcess(
                root / name, upstream.url, username=upstream.username, password=upstream.password, **shared
            )
            started.append(process.start())
            process.manage("shell", "-c", SETUP)
        yield started
    finally:
        for process in started:
            process.stop()
        forget_keys(REDIS_URL, shared["MIRROR_REDIS_KEY_PREFIX"])


def in_parallel(send: Callable[[], requests.Response], count: int = 32) -> list[requests.Response]:
    barrier = threading.Barrier(count)

    def one(_: int) -> requests.Response:
        barrier.wait()
        return send()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def assert_refused_as_registry(answers: list[requests.Response]) -> int:
    """The refused answers are 429 TOOMANYREQUESTS with Retry-After; returns the longest wait."""
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused
    for answer in refused:
        assert answer.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 0 < int(answer.headers["Retry-After"]) <= LOCKOUT
    return max(int(answer.headers["Retry-After"]) for answer in refused)


def wait_out(seconds: int) -> None:
    time.sleep(seconds + 1)


def test_parallel_wrong_passwords_on_the_token_endpoint(guarded):
    answers = in_parallel(lambda: requests.get(f"{guarded.url}/v2/token", auth=("alice", "wrong"), timeout=60))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= LIMIT, f"{statuses.count(401)} passwords evaluated, limit {LIMIT}"
    wait = assert_refused_as_registry(answers)
    locked = requests.get(f"{guarded.url}/v2/token", auth=("alice", "alice-password"), timeout=30)
    assert locked.status_code == 429, "locked: even the right password is not checked"
    wait_out(wait)
    assert requests.get(f"{guarded.url}/v2/token", auth=("alice", "alice-password"), timeout=30).json()["token"]


def test_parallel_wrong_passwords_on_the_oauth_token_endpoint(guarded):
    form = {"grant_type": "password", "username": "bob", "password": "wrong", "service": "mirrorsite"}
    answers = in_parallel(lambda: requests.post(f"{guarded.url}/v2/token", data=form, timeout=60))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429} and statuses.count(401) <= LIMIT, statuses
    wait = assert_refused_as_registry(answers)
    wait_out(wait)
    ok = requests.post(f"{guarded.url}/v2/token", data={**form, "password": "bob-password"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["access_token"]


def test_parallel_wrong_passwords_with_basic_on_v2(guarded):
    answers = in_parallel(lambda: requests.get(f"{guarded.url}/v2/", auth=("carol", "wrong"), timeout=60))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429} and statuses.count(401) <= LIMIT, statuses
    wait = assert_refused_as_registry(answers)
    assert all(answer.headers["Docker-Distribution-API-Version"] == "registry/2.0" for answer in answers)
    assert requests.get(f"{guarded.url}/v2/", auth=("carol", "carol-password"), timeout=30).status_code == 429
    wait_out(wait)
    assert requests.get(f"{guarded.url}/v2/", auth=("carol", "carol-password"), timeout=30).status_code == 200


def admin_session(mirror: MirrorProcess) -> tuple[dict, str]:
    """The login page's CSRF cookie and form token (reusable by parallel posts)."""
    page = requests.get(f"{mirror.url}/admin/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return {"csrftoken": page.cookies["csrftoken"]}, token


def admin_login(mirror: MirrorProcess, cookies: dict, token: str, username: str, password: str) -> requests.Response:
    return requests.post(
        f"{mirror.url}/admin/login/?next=/admin/",
        cookies=cookies,
        allow_redirects=False,
        timeout=60,
        data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
        headers={"Referer": f"{mirror.url}/admin/login/"},
    )


def test_parallel_wrong_passwords_on_the_admin_form(guarded):
    cookies, token = admin_session(guarded)
    answers = in_parallel(lambda: admin_login(guarded, cookies, token, "root", "wrong"))
    evaluated = [a for a in answers if a.status_code == 200 and "Please enter the correct username" in a.text]
    refused = [a for a in answers if a.status_code == 429]
    assert len(evaluated) + len(refused) == len(answers), [a.status_code for a in answers]
    assert len(evaluated) <= LIMIT
    for answer in refused:  # the login page, saying why
        assert "Too many failed logins for this username or from your address" in answer.text
        assert 'name="password"' in answer.text and 0 < int(answer.headers["Retry-After"]) <= LOCKOUT
    wait_out(max(int(a.headers["Retry-After"]) for a in refused))
    assert admin_login(guarded, cookies, token, "root", "root-password").status_code == 302


def test_guesses_on_the_token_endpoint_lock_the_admin_login_too(guarded):
    """The same users, the same limiter: a superuser guessed at on /v2/token cannot then be
    guessed at on the admin form (nor the other way round)."""
    for _ in range(LIMIT):
        assert requests.get(f"{guarded.url}/v2/token", auth=("root", "wrong"), timeout=30).status_code == 401
    cookies, token = admin_session(guarded)
    locked = admin_login(guarded, cookies, token, "root", "root-password")
    assert locked.status_code == 429 and "Too many failed logins" in locked.text
    assert requests.get(f"{guarded.url}/v2/", auth=("root", "root-password"), timeout=30).status_code == 429
    wait_out(int(locked.headers["Retry-After"]))
    assert admin_login(guarded, cookies, token, "root", "root-password").status_code == 302


def test_two_processes_sharing_redis_share_the_count(replicas):
    first, second = replicas
    for process in (first, second, first, second, first):  # five failures, spread over both
        assert requests.get(f"{process.url}/v2/token", auth=("dave", "wrong"), timeout=30).status_code == 401
    for process in (first, second):
        refused = requests.get(f"{process.url}/v2/token", auth=("dave", "dave-password"), timeout=30)
        assert refused.status_code == 429 and refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(refused.headers["Retry-After"]) > 0
    turns = itertools.count()  # alternate between the processes
    answers = in_parallel(
        lambda: requests.get(f"{(first, second)[next(turns) % 2].url}/v2/", auth=("erin", "wrong"), timeout=60)
    )
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(401) <= LIMIT and statuses.count(429) >= len(answers) - LIMIT, statuses
