"""Secure defaults: start-up refused without a secret key in a deployment, security headers,
cookie flags under HTTPS, admin login lockout, CSRF on the admin's forms, no traceback or
secret in answers and logs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import subprocess
import sys

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
import pytest

from access import attempts
from access.models import AccessRule, PasswordAttempts, Policy
from registry.models import UpstreamAccount

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_SHOWN = (
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_HTTPONLY",
    "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER",
    "MIRROR_DEPLOYMENT",
    "DEBUG",
)
# The environment a deployment is started with (docker-compose.yml), minus what is under test.
POSTGRES = "postgres://audit@127.0.0.1:5432/audit_never_created"


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py` in a fresh process with only the environment given (and a data dir)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MIRROR_", "REGISTRY_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        clean.pop(name, None)
    clean.update(MIRROR_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="mirrorsite.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_of(tmp_path: Path, **env: str) -> dict:
    shown = ", ".join(f"'{name}': settings.{name}" for name in SETTINGS_SHOWN)
    code = f"import json; from django.conf import settings; print(json.dumps({{{shown}}}))"
    run = manage("shell", "-c", code, tmp_path=tmp_path, **env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


# --- the secret key -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "deployment",
    [
        {"DATABASE_URL": POSTGRES},
        {"REDIS_URL": "redis://127.0.0.1:6379/8"},
        {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/8"},
    ],
)
def test_a_deployment_without_a_secret_key_refuses_to_start(tmp_path, deployment):
    run = manage("check", "--deploy", tmp_path=tmp_path, **deployment)
    assert run.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in run.stderr
    assert not (tmp_path / "data" / "secret_key").exists(), "no key generated for a deployment"


def test_a_deployment_with_a_key_over_https_passes_the_deploy_checks(tmp_path):
    run = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        tmp_path=tmp_path,
        DATABASE_URL=POSTGRES,
        DJANGO_SECRET_KEY="k" * 20 + "-a-deployment-key-of-enough-length-" + "z" * 20,
        MIRROR_HTTPS="true",
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert "no issues" in run.stdout


def test_the_embedded_default_generates_its_key_once(tmp_path):
    first = manage("check", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "data" / "secret_key"
    key = key_file.read_text()
    assert len(key) >= 50 and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert manage("check", tmp_path=tmp_path).returncode == 0
    assert key_file.read_text() == key


# --- HTTPS-dependent settings ----------------------------------------------------------------------
def test_plain_http_keeps_cookies_usable_and_sends_no_hsts(tmp_path):
    shown = settings_of(tmp_path)
    assert shown == {
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_PROXY_SSL_HEADER": None,
        "MIRROR_DEPLOYMENT": False,
        "DEBUG": False,
    }


def test_serving_tls_itself_makes_cookies_secure_and_turns_hsts_on(tmp_path):
    shown = settings_of(tmp_path, REGISTRY_HTTP_TLS_CERTIFICATE="/etc/mirror/cert.pem")
    assert (shown["SESSION_COOKIE_SECURE"], shown["CSRF_COOKIE_SECURE"], shown["SECURE_HSTS_SECONDS"]) == (
        True,
        True,
        31536000,
    )
    assert shown["SECURE_PROXY_SSL_HEADER"] is None


def test_behind_a_tls_proxy_its_header_is_believed_only_when_configured(tmp_path):
    shown = settings_of(
        tmp_path, MIRROR_HTTPS="true", MIRROR_PROXY_SSL_HEADER="X-Forwarded-Proto", MIRROR_HSTS_SECONDS="600"
    )
    assert shown["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert (shown["SESSION_COOKIE_SECURE"], shown["SECURE_HSTS_SECONDS"]) == (True, 600)


# --- headers ---------------------------------------------------------------------------------------
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v2/", "/admin/login/", "/api/schema/", "/v2/UPPER/manifests/1"])
def test_security_headers_on_every_answer(client, path):
    response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.get(name) == value, (path, name)
    assert "Strict-Transport-Security" not in response, "no HSTS over plain HTTP"


@pytest.mark.django_db
def test_hsts_only_on_https_requests(client, settings):
    settings.SECURE_HSTS_SECONDS = 600  # as MIRROR_HTTPS sets it
    assert "Strict-Transport-Security" not in client.get("/v2/")
    assert client.get("/v2/", secure=True)["Strict-Transport-Security"] == "max-age=600"


# --- admin login lockout (the password-guessing limiter of access/attempts.py) ----------------------
@pytest.fixture
def login_limits(settings):
    settings.MIRROR_LOGIN_ATTEMPTS = 3
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 20
    settings.MIRROR_LOGIN_LOCKOUT = 900
    settings.REDIS_URL = ""  # counted in the database (rolled back after each test)


def log_in(password: str, address: str = "192.0.2.1", username: str = "root"):
    client = Client(REMOTE_ADDR=address)
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"})


@pytest.mark.django_db
def test_failed_admin_logins_lock_the_username_out(login_limits):
    User.objects.create_superuser("root", "root@example.org", "right-password-1")
    User.objects.create_superuser("other", "other@example.org", "right-password-2")
    for _ in range(3):
        failed = log_in("wrong")
        assert failed.status_code == 200 and "Please enter the correct username" in failed.content.decode()
    locked = log_in("right-password-1")
    assert locked.status_code == 429, "the right password no longer gets in"
    assert locked["Retry-After"] == "900"
    assert (
        "Too many failed logins for this username or from your address. Try again in 15 minutes."
        in locked.content.decode()
    )
    assert '<form action="/admin/login/' in locked.content.decode(), "the login page, with its form"
    assert "_auth_user_id" not in locked.wsgi_request.session

    assert log_in("right-password-1", address="198.51.100.2").status_code == 429, "the user name, from anywhere"
    assert "Too many failed" in log_in("wrong", username="Root ").content.decode(), (
        "usernames compare as typed, loosely"
    )
    assert log_in("right-password-2", username="other").status_code == 302, (
        "another user from that address is not locked"
    )

    PasswordAttempts.objects.update(window_ends=timezone.now())  # the lockout period is over
    assert log_in("right-password-1").status_code == 302


@pytest.mark.django_db
def test_a_success_clears_the_failures(login_limits):
    User.objects.create_superuser("root", "root@example.org", "right-password-1")
    for _ in range(2):
        log_in("wrong")
    assert log_in("right-password-1").status_code == 302
    for _ in range(2):
        log_in("wrong")
    assert log_in("right-password-1").status_code == 302, "two failures after a success: not locked"


@pytest.mark.django_db
def test_guesses_spread_over_user_names_lock_the_address_out(login_limits, settings):
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 4
    User.objects.create_superuser("root", "root@example.org", "right-password-1")
    for name in ("a", "b", "c", "d"):
        assert log_in("wrong", username=name).status_code == 200
    assert log_in("right-password-1").status_code == 429, "that address guessed enough"
    assert log_in("right-password-1", address="198.51.100.2").status_code == 302


@pytest.mark.django_db
def test_the_lockout_counts_the_real_client_behind_a_trusted_proxy(login_limits, settings):
    settings.MIRROR_TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 2
    User.objects.create_superuser("root", "root@example.org", "right-password-1")
    client = Client(REMOTE_ADDR="10.0.0.5")
    for name, forged in (("a", "203.0.113.1"), ("b", "203.0.113.2"), ("c", "203.0.113.3")):
        client.post("/admin/login/", {"username": name, "password": "x"}, HTTP_X_FORWARDED_FOR=forged)
    # Three different clients behind the proxy: none is locked.
    ok = client.post(
        "/admin/login/", {"username": "root", "password": "right-password-1"}, HTTP_X_FORWARDED_FOR="203.0.113.1"
    )
    assert ok.status_code == 302


# --- CSRF, secrets, tracebacks ------------------------------------------------------------------------
@pytest.mark.django_db
def test_admin_and_dashboard_forms_need_the_csrf_token(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/admin/registry/prefetchjob/add/", {"image": "library/alpine:3.20"}).status_code == 403
    assert client.post("/api/prefetch-jobs/", {"image": "library/alpine:3.20"}).status_code == 403
    form = client.get("/admin/registry/prefetchjob/add/")
    assert b'name="csrfmiddlewaretoken"' in form.content


@pytest.mark.django_db
def test_the_account_form_keeps_its_secret_out_of_error_reports(admin_client, settings):
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    from registry.models import Upstream

    upstream = Upstream.objects.default()
    response = admin_client.post(
        "/admin/registry/upstreamaccount/add/",
        {"upstream": upstream.pk, "username": "", "new_secret": "dckr_pat_do-not-show", "position": "x"},
    )
    assert response.status_code == 200  # invalid position: the form comes back
    assert response.wsgi_request.sensitive_post_parameters == ("new_secret",)
    assert b"dckr_pat_do-not-show" not in response.content
    assert not UpstreamAccount.objects.filter(upstream=upstream, username="").exclude(position=0).exists()


@pytest.mark.django_db
def test_an_exception_no_view_caught_is_registry_json_without_a_traceback(monkeypatch):
    from dashboard import stats

    def broken(kind):
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(stats, "_Request", broken)  # fails outside the registry's own error handling
    client = Client(raise_request_exception=False)
    response = client.get("/v2/library/alpine/manifests/latest")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response["Docker-Distribution-API-Version"] == "registry/2.0"
    assert json.loads(response.content)["errors"][0]["message"] == "internal error"
    assert b"secret" not in response.content and b"Traceback" not in response.content


@pytest.mark.django_db
def test_a_failing_registry_view_answers_json_without_a_traceback(client, monkeypatch, caplog):
    from registry.upstreams import routing

    def broken(request, name):
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(routing, "route", broken)
    with caplog.at_level(logging.ERROR):
        response = client.get("/v2/library/alpine/manifests/latest")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["errors"][0]["message"] == "internal error"
    assert b"secret" not in response.content and b"Traceback" not in response.content
    assert "internal detail" in caplog.text, "logged for the operator, not shown to the client"


@pytest.mark.django_db(transaction=True)
def test_upstream_secrets_are_never_logged(client, settings, tmp_path, upstream, images, caplog):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = upstream.username, upstream.password
    AccessRule.objects.create(pattern="private/*", policy=Policy.PUBLIC)  # pulled with the account's secret
    with caplog.at_level(logging.DEBUG):
        assert client.get("/v2/library/small/manifests/1").status_code == 200
        assert client.get("/v2/private/secret/manifests/1").status_code == 200
        settings.REGISTRY_PROXY_PASSWORD = "wrong-password-never-logged"
        from registry import memory

        memory.forget_all()
        client.get("/v2/library/big/manifests/1")  # the upstream rejects this account
    assert "rejected account" in caplog.text, "the wrong password was tried (and its failure logged)"
    for secret in (upstream.password, "wrong-password-never-logged"):
        assert secret not in caplog.text


# --- file paths from client input ------------------------------------------------------------------
@pytest.mark.parametrize(
    "algorithm,encoded",
    [
        ("sha256", "../../../etc/passwd"),
        ("sha256", "a" * 63 + "/"),
        ("../sha256", "a" * 64),
        ("sha256", "A" * 64),
        ("md5", "a" * 32),
        ("sha256", "a" * 64 + "\n"),
    ],
)
def test_a_digest_that_could_name_another_file_cannot_exist(algorithm, encoded, tmp_path):
    from registry import oci
    from registry.storage.blobstore import FilesystemStore

    with pytest.raises(oci.DigestInvalid):
        FilesystemStore(tmp_path).path(oci.Digest(algorithm, encoded))


def test_blob_paths_stay_under_the_store(tmp_path):
    from registry import oci
    from registry.storage.blobstore import FilesystemStore

    digest = oci.parse_digest("sha512:" + "f" * 128)
    path = FilesystemStore(tmp_path).path(digest)
    assert path.resolve().is_relative_to((tmp_path / "blobs").resolve())
    assert FilesystemStore.relative_path(digest) == f"sha512/ff/{'f' * 128}"


@pytest.mark.parametrize("header", ["bytes=\u0663-", "bytes=0-\u0669", "bytes=0-1\nx", "bytes=0-1,2-3", "items=0-1"])
def test_ranges_take_ascii_digits_and_one_range_only(header):
    from registry import oci
    from registry.api.responses import parse_range

    with pytest.raises(oci.RangeNotSatisfiable):
        parse_range(header, 100)


@pytest.mark.django_db
def test_logins_are_still_limited_when_redis_is_down(login_limits, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:9/8"  # nothing listens there
    attempts._last_warning.clear()  # warned once a minute: this test wants to see it
    User.objects.create_superuser("root", "root@example.org", "right-password-1")
    with caplog.at_level(logging.WARNING, logger="access.attempts"):
        assert log_in("wrong").status_code == 200
        assert log_in("right-password-1").status_code == 302, "no 500: the database counts instead"
        for _ in range(3):
            log_in("wrong")
        assert log_in("right-password-1").status_code == 429
    assert "cannot be counted in Redis" in caplog.text
