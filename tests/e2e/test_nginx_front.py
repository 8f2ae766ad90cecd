"""Behind nginx: misses stream through the proxy, hits are sent by nginx (X-Accel-Redirect)."""

from __future__ import annotations

from collections.abc import Iterator
import json

import pytest
import requests

from tests.support.images import MANIFEST_ACCEPT
from tests.support.mirror import MirrorProcess
from tests.support.nginx import NginxFront
from tests.support.source_address import request_from


@pytest.fixture(scope="module")
def front(upstream, tmp_path_factory) -> Iterator[tuple[NginxFront, MirrorProcess]]:
    data_dir = tmp_path_factory.mktemp("nginx-mirror") / "data"
    mirror = MirrorProcess(
        data_dir,
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_X_ACCEL_REDIRECT="/_mirror_blobs/",
        # nginx is the trusted proxy; clients are told apart by the address it forwards.
        MIRROR_TRUSTED_PROXIES="127.0.0.1/32",
        MIRROR_ALLOWED_NETWORKS="127.0.0.1/32",
    ).start()
    nginx = NginxFront(tmp_path_factory.mktemp("nginx"), mirror.host, data_dir / "blobs").start()
    yield nginx, mirror
    nginx.stop()
    mirror.stop()


def test_pull_through_nginx_cold_then_warm(front, images, skopeo, tmp_path):
    nginx, mirror = front
    for attempt in ("cold", "warm"):
        skopeo.run(
            "copy",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{nginx.host}/library/big:1",
            f"dir:{tmp_path / attempt}",
        )
        got = {p.name: p.read_bytes() for p in (tmp_path / attempt).iterdir() if len(p.name) == 64}
        assert got == {b.digest.split(":")[1]: b.data for b in images.big.blobs}, attempt


def test_hits_are_sent_by_nginx_with_registry_headers_and_ranges(front, images):
    nginx, mirror = front
    layer = images.big.layers[1]
    url = f"{nginx.url}/v2/library/big/blobs/{layer.digest}"
    requests.get(url, timeout=30).raise_for_status()  # cached now
    direct = requests.get(f"{mirror.url}/v2/library/big/blobs/{layer.digest}", timeout=30)
    assert direct.headers["X-Accel-Redirect"] == f"/_mirror_blobs/sha256/{layer.digest[7:9]}/{layer.digest[7:]}"
    assert direct.content == b"", "the mirror hands the bytes to nginx"

    hit = requests.get(url, timeout=30)
    assert hit.status_code == 200 and hit.content == layer.data
    assert hit.headers["Docker-Content-Digest"] == layer.digest
    assert hit.headers["Content-Length"] == str(layer.size)
    assert hit.headers["Content-Type"] == "application/octet-stream"
    assert "X-Accel-Redirect" not in hit.headers
    part = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert part.status_code == 206 and part.content == layer.data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{layer.size}"
    manifest = requests.get(f"{nginx.url}/v2/library/big/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    assert manifest.content == images.big.manifest
    assert manifest.headers["Docker-Content-Digest"] == images.big.digest


def test_the_client_address_arrives_through_nginx(front):
    """nginx forwards the client's address (X-Forwarded-For): the mirror's allow-list sees a
    client on 127.0.0.2 as itself, not as nginx (127.0.0.1, which the list admits)."""
    nginx, mirror = front
    assert request_from("127.0.0.1", f"{nginx.url}/v2/").status == 200
    outside = request_from("127.0.0.2", f"{nginx.url}/v2/")
    assert outside.status == 403 and json.loads(outside.body)["errors"][0]["code"] == "DENIED"
    # A client cannot pass for an allowed one: nginx appends the address it really saw.
    claimed = request_from("127.0.0.2", f"{nginx.url}/v2/", headers={"X-Forwarded-For": "127.0.0.1"})
    assert claimed.status == 403
