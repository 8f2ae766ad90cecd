"""Who may pull, end to end: a mirror with client authentication and a network allow-list,
driven by real skopeo (login, copy, inspect with its own auth files)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
import json
from pathlib import Path

import pytest
import requests

from access import tokens
from tests.support.accesslog import AccessLog
from tests.support.egress import EgressTrap
from tests.support.images import MANIFEST_ACCEPT, sha256_digest
from tests.support.manual import client_config
from tests.support.mirror import MirrorProcess
from tests.support.nginx import NginxFront
from tests.support.skopeo import Skopeo
from tests.support.source_address import request_from
from tests.support.tls import ServerCertificate, make_server_certificate

SERVICE = "mirror-e2e"
TOKEN_KEY = "mirror-e2e-token-key"
SETUP = """
from django.contrib.auth.models import Group, User
from access.models import AccessRule
builders = Group.objects.create(name="builders")
User.objects.create_user("alice", password="alice-password").groups.add(builders)
User.objects.create_user("bob", password="bob-password")
AccessRule.objects.create(pattern="library/big", policy="groups").groups.add(builders)
"""


@pytest.fixture(scope="module")
def guarded(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    """Auth on; only 127.0.0.1 may use it, and 127.0.0.1 is also trusted as a proxy."""
    mirror = MirrorProcess(
        tmp_path_factory.mktemp("guarded-mirror") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_AUTH="true",
        MIRROR_AUTH_SERVICE=SERVICE,
        MIRROR_AUTH_TOKEN_KEY=TOKEN_KEY,
        MIRROR_ALLOWED_NETWORKS="127.0.0.1/32",
        MIRROR_TRUSTED_PROXIES="127.0.0.1/32",
    ).start()
    mirror.manage("shell", "-c", SETUP)
    yield mirror
    mirror.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> ServerCertificate:
    return make_server_certificate(tmp_path_factory.mktemp("front-tls"))


@pytest.fixture(scope="module")
def tls_front(guarded, certificate, tmp_path_factory) -> Iterator[NginxFront]:
    """The recommended deployment: the TLS front of deploy/ (docker-compose's `tls` profile)."""
    front = NginxFront(
        tmp_path_factory.mktemp("tls-front"), guarded.host, guarded.data_dir / "blobs", tls=certificate
    ).start()
    yield front
    front.stop()


def login(skopeo, mirror, authfile: Path, username: str, password: str, check: bool = True):
    return skopeo.run(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(authfile),
        "-u",
        username,
        "-p",
        password,
        mirror.host,
        check=check,
    )


def inspect(skopeo, mirror: MirrorProcess, image: str, authfile: Path | None = None, check: bool = False):
    creds = ["--authfile", str(authfile)] if authfile else ["--no-creds"]
    return skopeo.run("inspect", "--tls-verify=false", "--raw", *creds, f"docker://{mirror.host}/{image}", check=check)


def test_clients_outside_the_allowed_networks_get_403(guarded):
    for path in ("/v2/", "/v2/library/small/manifests/1", "/v2/token"):
        second_machine = request_from("127.0.0.2", f"{guarded.url}{path}")
        assert second_machine.status == 403, path
        assert json.loads(second_machine.body)["errors"][0]["code"] == "DENIED"
    assert request_from("127.0.0.2", f"{guarded.url}/metrics").status == 403
    assert request_from("127.0.0.2", f"{guarded.url}/admin/login/").status == 403
    forwarded = requests.get(f"{guarded.url}/v2/", headers={"X-Forwarded-For": "192.0.2.50"}, timeout=10)
    assert forwarded.status_code == 403, "a trusted proxy forwarding an address outside the list"
    assert requests.get(f"{guarded.url}/v2/", timeout=10).status_code == 401, "inside: asked to log in"


def test_private_repository_needs_login_then_pulls(guarded, images, skopeo, tmp_path):
    refused = inspect(skopeo, guarded, "private/secret:1")
    assert refused.returncode != 0 and b"unauthorized" in refused.stderr.lower(), refused.stderr
    authfile = tmp_path / "auth.json"
    login(skopeo, guarded, authfile, "alice", "alice-password")
    assert guarded.host in json.loads(authfile.read_text())["auths"]
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-authfile",
        str(authfile),
        f"docker://{guarded.host}/private/secret:1",
        f"dir:{tmp_path / 'private'}",
    )
    assert (tmp_path / "private" / "manifest.json").read_bytes() == images.private.manifest
    for blob in images.private.blobs:
        assert (tmp_path / "private" / blob.digest.split(":")[1]).read_bytes() == blob.data
    # Cached now, and still never served to an anonymous client, manifest or blob.
    again = inspect(skopeo, guarded, "private/secret:1")
    assert again.returncode != 0 and b"unauthorized" in again.stderr.lower()
    anonymous = requests.get(f"{guarded.url}/v2/private/secret/blobs/{images.private.layers[0].digest}", timeout=10)
    assert (
        anonymous.status_code == 401
        and 'scope="repository:private/secret:pull"' in anonymous.headers["WWW-Authenticate"]
    )


def test_public_repository_pulls_without_login(guarded, images, skopeo, tmp_path):
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{guarded.host}/library/small:1",
        f"dir:{tmp_path / 'small'}",
    )
    assert (tmp_path / "small" / "manifest.json").read_bytes() == images.small.manifest


def test_wrong_password_fails_login(guarded, skopeo, tmp_path):
    failed = login(skopeo, guarded, tmp_path / "auth.json", "alice", "not-her-password", check=False)
    assert failed.returncode != 0
    assert not (tmp_path / "auth.json").exists() or guarded.host not in (tmp_path / "auth.json").read_text()


def test_user_outside_the_group_is_denied(guarded, images, skopeo, tmp_path):
    bob, alice = tmp_path / "bob.json", tmp_path / "alice.json"
    login(skopeo, guarded, bob, "bob", "bob-password")
    login(skopeo, guarded, alice, "alice", "alice-password")
    denied = inspect(skopeo, guarded, "library/big:1", bob)
    assert denied.returncode != 0 and b"denied" in denied.stderr.lower(), denied.stderr
    allowed = inspect(skopeo, guarded, "library/big:1", alice, check=True)
    assert allowed.stdout == images.big.manifest


def test_expired_forged_and_tampered_tokens_get_401(guarded, images, settings):
    settings.MIRROR_AUTH_SERVICE, settings.MIRROR_AUTH_TOKEN_KEY = SERVICE, TOKEN_KEY  # the mirror's
    issued = requests.get(
        f"{guarded.url}/v2/token",
        params={"service": SERVICE, "scope": "repository:private/secret:pull"},
        auth=("alice", "alice-password"),
        timeout=10,
    ).json()["token"]
    url = f"{guarded.url}/v2/private/secret/manifests/1"

    def status(token: str) -> int:
        return requests.get(
            url, headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT}, timeout=10
        ).status_code

    assert status(issued) == 200
    expired = tokens.issue("alice", [], lifetime=60, now=datetime.now(UTC) - timedelta(minutes=5)).token
    settings.MIRROR_AUTH_TOKEN_KEY = "a key the mirror does not have"
    forged = tokens.issue("alice", []).token
    header, payload, signature = issued.split(".")
    tampered = f"{header}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{signature}"
    for token in (expired, forged, tampered):
        assert status(token) == 401


def test_login_and_pull_through_the_tls_front(tls_front, certificate, images, skopeo, tmp_path):
    challenge = requests.get(f"{tls_front.url}/v2/", verify=tls_front.verify, timeout=10).headers["WWW-Authenticate"]
    assert f'realm="https://{tls_front.host}/v2/token"' in challenge, "the front's scheme, as it forwarded it"
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(certificate.ca_cert.read_bytes())
    authfile = tmp_path / "auth.json"
    skopeo.run(
        "login",
        "--cert-dir",
        str(certs),
        "--authfile",
        str(authfile),
        "-u",
        "alice",
        "-p",
        "alice-password",
        tls_front.host,
    )
    skopeo.run(
        "copy",
        "--src-cert-dir",
        str(certs),
        "--src-authfile",
        str(authfile),
        f"docker://{tls_front.host}/private/secret:1",
        f"dir:{tmp_path / 'private'}",
    )
    assert (tmp_path / "private" / "manifest.json").read_bytes() == images.private.manifest
    # The allow-list sees the client behind the front, not the front.
    outside = request_from("127.0.0.2", f"{tls_front.url}/v2/", ca_file=str(certificate.ca_cert))
    assert outside.status == 403


def test_login_is_used_for_pulls_through_a_registries_conf_mirror(guarded, images, tmp_path):
    """The README's registries.conf mirror, and credentials stored for the mirror's host: a
    pull of docker.io/private/secret goes to the mirror, logged in (Docker Hub is a trap)."""
    trap = EgressTrap().start()
    try:
        (tmp_path / "skopeo").mkdir()
        skopeo = Skopeo(tmp_path / "skopeo")
        skopeo.env.update(trap.env)
        (skopeo.workdir / "registries.conf").write_text(client_config("registries.conf", guarded.host))
        authfile = tmp_path / "auth.json"
        anonymous = skopeo.run("inspect", "--raw", "--no-creds", "docker://docker.io/private/secret:1", check=False)
        assert anonymous.returncode != 0, "the mirror refuses it anonymously, and Docker Hub is out of reach"
        login(skopeo, guarded, authfile, "alice", "alice-password")
        trap.clear()
        raw = skopeo.run("inspect", "--raw", "--authfile", str(authfile), "docker://docker.io/private/secret:1").stdout
        assert sha256_digest(raw) == images.private.digest
        assert trap.requests == []
    finally:
        trap.stop()


def test_containerd_sends_the_user_it_is_given(guarded, images, containerd):
    reference = f"{guarded.host}/private/secret:1"
    refused = containerd.ctr("images", "pull", "--plain-http", reference, namespace="access", check=False)
    assert refused.returncode != 0 and "insufficient_scope" in refused.stderr, "our challenge's error"
    log = AccessLog(guarded.log_path)
    mark = log.mark()
    containerd.ctr("images", "pull", "--plain-http", "--user", "alice:alice-password", reference, namespace="access")
    assert containerd.images("access")[reference].digest == images.private.digest
    tokens_issued = [(e.method, e.status) for e in log.entries(mark) if e.path == "/v2/token"]
    assert ("POST", 200) in tokens_issued, f"containerd's OAuth2 password grant: {tokens_issued}"
