"""The mirror serving HTTPS itself (REGISTRY_HTTP_TLS_CERTIFICATE / REGISTRY_HTTP_TLS_KEY)."""

from __future__ import annotations

from collections.abc import Iterator
import subprocess
import sys

import pytest
import requests

from tests.support.mirror import PROJECT_ROOT, MirrorProcess
from tests.support.tls import ServerCertificate, make_server_certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> ServerCertificate:
    return make_server_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_mirror(certificate, upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    mirror = MirrorProcess(
        tmp_path_factory.mktemp("tls-mirror") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        REGISTRY_HTTP_TLS_CERTIFICATE=str(certificate.cert),
        REGISTRY_HTTP_TLS_KEY=str(certificate.key),
    )
    mirror.verify = str(certificate.ca_cert)
    yield mirror.start()
    mirror.stop()


def test_skopeo_pulls_over_https_with_verification(https_mirror, certificate, images, skopeo, tmp_path):
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(certificate.ca_cert.read_bytes())
    for attempt in ("cold", "warm"):
        skopeo.run(
            "copy",
            "--src-cert-dir",
            str(cert_dir),
            "--src-no-creds",
            f"docker://{https_mirror.host}/library/big:1",
            f"dir:{tmp_path / attempt}",
        )
        got = {p.name: p.read_bytes() for p in (tmp_path / attempt).iterdir() if len(p.name) == 64}
        assert got == {b.digest.split(":")[1]: b.data for b in images.big.blobs}, attempt


def test_a_wrong_ca_is_refused(https_mirror, skopeo, tmp_path):
    other = make_server_certificate(tmp_path / "other", ca_name="Some other CA")
    cert_dir = tmp_path / "wrong"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(other.ca_cert.read_bytes())
    failed = skopeo.run(
        "inspect",
        "--cert-dir",
        str(cert_dir),
        "--no-creds",
        "--raw",
        f"docker://{https_mirror.host}/library/small:1",
        check=False,
    )
    assert failed.returncode != 0
    assert b"certificate" in failed.stderr


def test_admin_cookies_are_secure_and_hsts_is_sent_over_https(https_mirror):
    """Served over HTTPS, the admin's cookies go over HTTPS only, no script reads them, and
    browsers are told to come back over HTTPS (Strict-Transport-Security)."""
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "root", "--email", "r@example.org"],
        cwd=PROJECT_ROOT,
        env={**https_mirror.env, "DJANGO_SUPERUSER_PASSWORD": "a-long-admin-password"},
        check=True,
        capture_output=True,
    )
    session = requests.Session()
    login = session.get(f"{https_mirror.url}/admin/login/", timeout=10, verify=https_mirror.verify)
    assert login.status_code == 200
    assert login.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert login.headers["X-Frame-Options"] == "DENY"
    answer = session.post(
        f"{https_mirror.url}/admin/login/?next=/admin/",
        data={
            "username": "root",
            "password": "a-long-admin-password",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{https_mirror.url}/admin/login/"},
        allow_redirects=False,
        timeout=10,
        verify=https_mirror.verify,
    )
    assert answer.status_code == 302, answer.text[:500]
    cookies = {cookie.name: cookie for cookie in session.cookies}
    for name in ("csrftoken", "sessionid"):
        assert cookies[name].secure, name
        assert cookies[name].has_nonstandard_attr("HttpOnly"), name
        assert cookies[name].get_nonstandard_attr("SameSite") == "Lax", name
