"""Two upstream registries behind one mirror, as real processes.

The session's Distribution is the default upstream (standing in for Docker Hub); a second
Distribution, with the same token server, stands in for ghcr.io: the MIRROR_UPSTREAMS file
gives it the host name `ghcr.io`, the alias `ghcr`, and two accounts, the first with a wrong
password. Both hold `library/same:1`, different images. Clients are configured with the
the manual's snippets for several registries; their non-loopback traffic goes to the egress trap.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
import socket
import threading
import time

import pytest
import requests

from tests.support.accesslog import AccessLog
from tests.support.containerd import Containerd, write_hosts_dir
from tests.support.egress import EgressTrap
from tests.support.images import MANIFEST_ACCEPT, PushedImage, push_image, sha256_digest
from tests.support.manual import client_config
from tests.support.mirror import MirrorProcess
from tests.support.skopeo import Skopeo
from tests.support.upstream_registry import UpstreamRegistry

KB = 1024
SECOND_USER, SECOND_PASSWORD = "ghcr-bot", "ghcr-bot-e2e-password"
WRONG_USER, WRONG_PASSWORD = "ghcr-intruder", "not-a-password-anyone-has"


class Two:
    """The second registry, and what each registry holds under the same name."""

    def __init__(self, registry: UpstreamRegistry, first: PushedImage, second: PushedImage, only: PushedImage):
        self.registry, self.first, self.second, self.only = registry, first, second, only


@pytest.fixture(scope="module")
def two(upstream, token_server) -> Iterator[Two]:
    second = UpstreamRegistry(
        token_server, username=SECOND_USER, password=SECOND_PASSWORD, service="second-registry"
    ).start()
    try:
        first_same = push_image(upstream, "library/same", "1", layer_sizes=[32 * KB], seed=9500)
        second_same = push_image(second, "library/same", "1", layer_sizes=[32 * KB], seed=9501)
        only = push_image(second, "team/only-second", "1", layer_sizes=[32 * KB], seed=9502)
        yield Two(second, first_same, second_same, only)
    finally:
        second.cleanup()


def upstreams_file(directory: Path, second_url: str) -> Path:
    path = directory / "upstreams.yaml"
    path.write_text(f"""upstreams:
  - url: {second_url}
    name: second
    hosts: [ghcr.io]
    alias: ghcr
    accounts:
      - username: {WRONG_USER}
        password: {WRONG_PASSWORD}
      - username: {SECOND_USER}
        password_env: SECOND_REGISTRY_TOKEN
""")
    return path


@pytest.fixture(scope="module")
def mirror2(upstream, two, tmp_path_factory) -> Iterator[MirrorProcess]:
    directory = tmp_path_factory.mktemp("two-upstreams")
    process = MirrorProcess(
        directory / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_UPSTREAMS=str(upstreams_file(directory, two.registry.url)),
        SECOND_REGISTRY_TOKEN=SECOND_PASSWORD,
        MIRROR_EMBEDDED_WORKERS="false",  # verification runs in `serve` itself; no worker is needed here
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def trap() -> Iterator[EgressTrap]:
    found = EgressTrap().start()
    yield found
    found.stop()


def manifest_gets(registry: UpstreamRegistry, repository: str, since: int) -> int:
    """GETs of <repository>:1 that got past authentication."""
    path = f"/v2/{repository}/manifests/1"
    return sum(1 for r in registry.requests_log(since) if (r.method, r.path) == ("GET", path) and r.status != 401)


def manifest(mirror: MirrorProcess, path: str) -> requests.Response:
    return requests.get(f"{mirror.url}{path}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30)


def test_a_path_alias_and_the_root_keep_equal_names_apart(mirror2, two, upstream, skopeo, tmp_path):
    second_mark, first_mark = two.registry.log_mark(), upstream.log_mark()
    for reference, image in (("ghcr/library/same:1", two.second), ("library/same:1", two.first)):
        dest = tmp_path / reference.replace("/", "_")
        skopeo.run(
            "copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{mirror2.host}/{reference}", f"dir:{dest}"
        )
        assert (dest / "manifest.json").read_bytes() == image.manifest
    assert manifest_gets(two.registry, "library/same", since=second_mark) == 1
    assert manifest_gets(upstream, "library/same", since=first_mark) == 1
    stored = mirror2.query(
        "SELECT u.name, m.digest FROM registry_manifest m JOIN registry_repository r ON m.repository_id = r.id "
        "JOIN registry_upstream u ON r.upstream_id = u.id WHERE r.name = 'library/same' ORDER BY u.name"
    )
    assert stored == [(f"127-0-0-1-{upstream.port}", two.first.digest), ("second", two.second.digest)]
    # The registry's host name as the path prefix works as well.
    assert manifest(mirror2, "/v2/ghcr.io/team/only-second/manifests/1").content == two.only.manifest


def test_ns_picks_the_upstream_and_is_echoed(mirror2, two):
    mark = two.registry.log_mark()
    second = manifest(mirror2, "/v2/library/same/manifests/1?ns=ghcr.io")
    assert second.headers["Docker-Content-Digest"] == two.second.digest
    assert second.headers["OCI-Namespace"] == "ghcr.io"
    first = manifest(mirror2, "/v2/library/same/manifests/1?ns=docker.io")
    assert first.headers["Docker-Content-Digest"] == two.first.digest
    assert first.headers["OCI-Namespace"] == "docker.io"
    blob = two.only.layers[0]
    got = requests.get(f"{mirror2.url}/v2/team/only-second/blobs/{blob.digest}?ns=ghcr.io", timeout=30)
    assert got.content == blob.data
    assert two.registry.blob_gets(blob.digest, since=mark) == 1
    unknown = manifest(mirror2, "/v2/library/same/manifests/1?ns=quay.io")
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_the_rejected_account_handed_over_and_the_switch_is_recorded(mirror2, two):
    assert manifest(mirror2, "/v2/ghcr/team/only-second/manifests/1").status_code == 200
    switches = mirror2.query(
        "SELECT s.from_label, s.to_label, s.reason FROM registry_accountswitch s "
        "JOIN registry_upstream u ON s.upstream_id = u.id WHERE u.name = 'second'"
    )
    assert switches == [(WRONG_USER, SECOND_USER, "credentials rejected")]
    in_use = mirror2.query(
        "SELECT a.username FROM registry_upstream u JOIN registry_upstreamaccount a ON u.active_account_id = a.id "
        "WHERE u.name = 'second'"
    )
    assert in_use == [(SECOND_USER,)]
    report = requests.get(f"{mirror2.url}/readyz", timeout=10).json()["upstreams"]["second"]
    # /readyz names accounts by id only.
    (second_id,), (wrong_id,) = (
        mirror2.query("SELECT id FROM registry_upstreamaccount WHERE username = ?", name)
        for name in (SECOND_USER, WRONG_USER)
    )
    assert report["status"] == "ok" and report["account_in_use"] == second_id[0]
    assert report["accounts"][str(wrong_id[0])]["verification"] == "rejected"


def test_no_request_reaches_a_host_that_is_not_configured(mirror2):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        for target in (
            f"/v2/library/same/manifests/1?ns=127.0.0.1:{port}",
            f"/v2/library/same/manifests/1?ns=localhost:{port}",
            f"/v2/library/same/manifests/1?ns=ghcr.io@127.0.0.1:{port}",
            f"/v2/library/same/blobs/sha256:{'a' * 64}?ns=[::1]:{port}",
            f"/v2/127.0.0.1:{port}/library/same/manifests/1",
            f"/v2/ghcr.io@127.0.0.1:{port}/library/same/tags/list",
        ):
            response = requests.get(f"{mirror2.url}{target}", timeout=30)
            assert response.status_code in (400, 404), (target, response.status_code)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert accepted == []


def test_containerd_with_hosts_toml_for_two_registries(mirror2, two, upstream, trap, tmp_path):
    certs = tmp_path / "certs.d"
    write_hosts_dir(certs, "docker.io", client_config("hosts.toml", mirror2.host))
    write_hosts_dir(certs, "ghcr.io", client_config("ghcr.io hosts.toml", mirror2.host))
    daemon = Containerd().start()
    try:
        mirror_log = AccessLog(mirror2.log_path)
        mark = mirror_log.mark()
        trap.clear()
        for name, image in (("ghcr.io/library/same:1", two.second), ("docker.io/library/same:1", two.first)):
            daemon.ctr("images", "pull", "--hosts-dir", str(certs), name, namespace="two", env=trap.env)
            assert daemon.images("two")[name].digest == image.digest
            for blob in image.blobs:
                assert sha256_digest(daemon.content("two", blob.digest)) == blob.digest
        assert trap.requests == [], "nothing went around the mirror"
        asked = {
            (e.path, e.query.get("ns", [""])[0])
            for e in mirror_log.entries(mark)
            if e.user_agent.startswith("containerd/")
        }
        assert ("/v2/library/same/manifests/1", "ghcr.io") in asked
        assert ("/v2/library/same/manifests/1", "docker.io") in asked
    finally:
        daemon.cleanup()


def test_skopeo_with_registries_conf_for_two_registries(mirror2, two, trap, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text(
        client_config("registries.conf", mirror2.host) + client_config("ghcr.io registries.conf", mirror2.host)
    )
    (tmp_path / "skopeo").mkdir()
    skopeo = Skopeo(tmp_path / "skopeo")
    skopeo.env.update(trap.env)
    mirror_log = AccessLog(mirror2.log_path)
    mark = mirror_log.mark()
    trap.clear()
    for name, image in (("ghcr.io/library/same:1", two.second), ("docker.io/library/same:1", two.first)):
        raw = skopeo.run("--registries-conf", str(conf), "inspect", "--raw", f"docker://{name}").stdout
        assert raw == image.manifest
    assert trap.requests == []
    paths = {e.path for e in mirror_log.entries(mark) if e.user_agent.startswith("skopeo/")}
    assert {"/v2/ghcr/library/same/manifests/1", "/v2/library/same/manifests/1"} <= paths


def test_no_secret_in_the_log_or_the_database(mirror2, upstream, two):
    requests.get(f"{mirror2.url}/readyz", timeout=10)
    texts = [mirror2.log_path.read_bytes()]
    stored = mirror2.database.dump()
    assert SECOND_USER.encode() in stored, "the dump holds what the mirror stored"
    texts.append(stored)
    for secret in (SECOND_PASSWORD, WRONG_PASSWORD, upstream.password):
        assert all(secret.encode() not in text for text in texts), secret


def test_offline_start_serves_what_is_cached(two, tmp_path):
    """A mirror of the second registry only, started while that registry is down."""
    process = MirrorProcess(
        tmp_path / "data",
        two.registry.url,
        username=SECOND_USER,
        password=SECOND_PASSWORD,
        MIRROR_TAG_TTL="1",
        MIRROR_EMBEDDED_WORKERS="false",
    )
    process.start()
    try:
        assert manifest(process, "/v2/team/only-second/manifests/1").status_code == 200
        layer = two.only.layers[0]
        assert requests.get(f"{process.url}/v2/team/only-second/blobs/{layer.digest}", timeout=30).content == layer.data
    finally:
        process.stop()
    two.registry.stop()
    try:
        restarted = datetime.now(UTC)
        process.start()
        deadline = time.monotonic() + 60
        while True:  # start-up verification runs beside the server: wait for this start's check
            report = requests.get(f"{process.url}/readyz", timeout=10)
            upstreams = report.json()["upstreams"]
            checked = next(iter(upstreams.values()))["checked_at"]
            if (checked and datetime.fromisoformat(checked) >= restarted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert report.status_code == 200, "an unreachable upstream never makes the mirror unready"
        (status,) = upstreams.values()
        assert status["status"] == "unreachable"
        ((second_id,),) = process.query("SELECT id FROM registry_upstreamaccount WHERE username = ?", SECOND_USER)
        assert status["accounts"][str(second_id)]["verification"] == "unreachable"  # by id: /readyz names no account

        time.sleep(1.5)  # past the tag TTL: the tag must be revalidated, and cannot be
        stale = manifest(process, "/v2/team/only-second/manifests/1")
        assert stale.status_code == 200 and stale.content == two.only.manifest and "Stale" in stale.headers["Warning"]
        assert manifest(process, f"/v2/team/only-second/manifests/{two.only.digest}").status_code == 200
        assert requests.get(f"{process.url}/v2/team/only-second/blobs/{layer.digest}", timeout=30).content == layer.data
        missing = manifest(process, "/v2/team/never-pulled/manifests/1")
        assert missing.status_code == 503 and missing.json()["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        process.stop()
        two.registry.start()
