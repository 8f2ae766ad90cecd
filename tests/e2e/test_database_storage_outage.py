"""A mirror whose PostgreSQL or S3 bucket hangs (a relay that accepts and never answers) or goes
away (a relay that closes every connection) answers a clean 503 UNAVAILABLE in the registry's
JSON within its stated timeouts, never a 500 or a hang; /healthz answers meanwhile; once the
dependency answers again, what is cached is served (from the filesystem store, or the bucket)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.e2e.conftest import TAG_TTL
from tests.support.accesslog import AccessLog
from tests.support.databases import ProcessDatabase, postgres_session_url
from tests.support.images import MANIFEST_ACCEPT
from tests.support.mirror import MirrorProcess
from tests.support.s3_server import S3Server
from tests.support.tcp_relay import TcpRelay

# PostgreSQL: connect_timeout (5 s by default); S3: two tries of MIRROR_S3_CONNECT_TIMEOUT +
# MIRROR_S3_READ_TIMEOUT (2 s each here). An answer later than this is a hang.
ANSWER_WITHIN = 30


def through(url: str, relay: TcpRelay) -> str:
    """`url` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{relay.address}" if credentials else relay.address
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def pull(skopeo, mirror: MirrorProcess, reference: str, dest: Path) -> None:
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{mirror.host}/{reference}",
        f"dir:{dest}",
        timeout=120,
    )


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def server_errors(mirror: MirrorProcess) -> list:
    return [entry for entry in AccessLog(mirror.log_path).entries() if entry.status >= 500 and entry.status != 503]


# --- PostgreSQL ---------------------------------------------------------------------------------
@pytest.fixture
def postgres_relay(tmp_path) -> Iterator[tuple[TcpRelay, ProcessDatabase, Path]]:
    """A PostgreSQL database (the session's server, or the machine's) reached through a relay."""
    data_dir = tmp_path / "data"
    database = ProcessDatabase(data_dir, session_url=postgres_session_url("outage"))
    server = urlsplit(database.url)
    relay = TcpRelay((server.hostname, server.port or 5432)).start()
    yield relay, database, data_dir
    relay.stop()


@pytest.fixture
def postgres_mirror(postgres_relay, upstream) -> Iterator[tuple[MirrorProcess, TcpRelay]]:
    relay, database, data_dir = postgres_relay
    process = MirrorProcess(
        data_dir,
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        database=database,
        DATABASE_URL=through(database.url, relay),
        MIRROR_TAG_TTL=str(TAG_TTL),
        DJANGO_SECRET_KEY="db-outage-tests-only-" + "k" * 40,
    ).start()
    yield process, relay
    relay.set_mode("forward")  # so that it stops cleanly, writing what it buffered
    process.stop()


@pytest.mark.parametrize("failure", ["hang", "down"])
def test_postgres_hung_or_gone_answers_503_and_recovers(postgres_mirror, failure, skopeo, images, tmp_path):
    mirror, relay = postgres_mirror
    pull(skopeo, mirror, "library/small:1", tmp_path / "warm-up")
    layer = images.small.layers[0].digest
    relay.set_mode(failure)

    for url in (
        f"{mirror.url}/v2/library/multi/manifests/1",  # not cached
        f"{mirror.url}/v2/library/small/blobs/{layer}",  # cached blob: whose it is, is in the database
    ):
        assert_unavailable(requests.get(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=ANSWER_WITHIN))
    head = requests.head(
        f"{mirror.url}/v2/library/multi/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=ANSWER_WITHIN
    )
    assert head.status_code == 503 and head.content == b""
    assert requests.get(f"{mirror.url}/healthz", timeout=ANSWER_WITHIN).status_code == 200
    ready = requests.get(f"{mirror.url}/readyz", timeout=ANSWER_WITHIN)
    assert ready.status_code == 503 and "database" in ready.json()["failing"]

    relay.set_mode("forward")
    blob = requests.get(f"{mirror.url}/v2/library/small/blobs/{layer}", timeout=ANSWER_WITHIN)
    assert blob.status_code == 200 and blob.content == images.small.layers[0].data, "the filesystem store serves it"
    pull(skopeo, mirror, "library/small:1", tmp_path / "after")
    assert (tmp_path / "after" / "manifest.json").read_bytes() == images.small.manifest
    assert server_errors(mirror) == []


# --- S3 -----------------------------------------------------------------------------------------
@pytest.fixture
def s3_mirror(s3_server: S3Server, upstream, tmp_path) -> Iterator[tuple[MirrorProcess, TcpRelay]]:
    relay = TcpRelay(("127.0.0.1", s3_server.port)).start()
    bucket = s3_server.create_bucket("outage")
    env = s3_server.mirror_env(
        bucket,
        MIRROR_S3_ENDPOINT_URL=f"http://{relay.address}",
        MIRROR_S3_SERVE="stream",
        MIRROR_S3_CONNECT_TIMEOUT="2",
        MIRROR_S3_READ_TIMEOUT="2",
    )
    process = MirrorProcess(
        tmp_path / "data", upstream.url, username=upstream.username, password=upstream.password, **env
    ).start()
    yield process, relay
    relay.set_mode("forward")
    process.stop()
    relay.stop()


@pytest.mark.parametrize("failure", ["hang", "down"])
def test_s3_hung_or_gone_answers_503_for_blobs_and_serves_manifests(s3_mirror, failure, skopeo, images, tmp_path):
    mirror, relay = s3_mirror
    pull(skopeo, mirror, "library/small:1", tmp_path / "warm-up")
    layer = images.small.layers[0]
    relay.set_mode(failure)

    for method in ("GET", "HEAD"):
        assert_blob = requests.request(
            method, f"{mirror.url}/v2/library/small/blobs/{layer.digest}", timeout=ANSWER_WITHIN
        )
        assert assert_blob.status_code == 503, (method, assert_blob.status_code)
    assert_unavailable(requests.get(f"{mirror.url}/v2/library/small/blobs/{layer.digest}", timeout=ANSWER_WITHIN))
    # Manifests live in the database: still served.
    manifest = requests.get(
        f"{mirror.url}/v2/library/small/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=ANSWER_WITHIN
    )
    assert manifest.status_code == 200 and manifest.content == images.small.manifest
    assert requests.get(f"{mirror.url}/healthz", timeout=ANSWER_WITHIN).status_code == 200

    relay.set_mode("forward")
    blob = requests.get(f"{mirror.url}/v2/library/small/blobs/{layer.digest}", timeout=ANSWER_WITHIN)
    assert blob.status_code == 200 and blob.content == layer.data
    assert server_errors(mirror) == []
