"""Many clients, one upstream download: single-flight fills across worker processes and
replicas, fills that outlive their client, and an upstream that dies mid-blob."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
import hashlib
import itertools
from pathlib import Path
import socket
import subprocess
import time

import pytest
import requests

from tests.support.images import PushedImage, push_image
from tests.support.mirror import MirrorProcess

MB = 1024 * 1024
CLIENTS = 16
# A Redis database of its own, so the test's locks never meet anything else in the server.
REDIS_URL = "redis://127.0.0.1:6379/13"

_seeds = itertools.count(5000)


@pytest.fixture(scope="module")
def workers_mirror(proxy, upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    """One mirror, four worker processes, file locks (the embedded default)."""
    process = MirrorProcess(
        tmp_path_factory.mktemp("sf-mirror") / "data",
        proxy.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_WEB_WORKERS="4",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def replicas(proxy, upstream, tmp_path_factory) -> Iterator[tuple[MirrorProcess, MirrorProcess]]:
    """Two replicas sharing a data directory and coordinating through Redis."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    data_dir = tmp_path_factory.mktemp("sf-replicas") / "data"
    pair = tuple(
        MirrorProcess(data_dir, proxy.url, username=upstream.username, password=upstream.password, REDIS_URL=REDIS_URL)
        for _ in range(2)
    )
    for replica in pair:
        replica.start()
    yield pair
    for replica in pair:
        replica.stop()
    redis.Redis.from_url(REDIS_URL).flushdb()


def fresh_image(upstream, layer_sizes: list[int]) -> PushedImage:
    seed = next(_seeds)
    return push_image(upstream, f"singleflight/img{seed}", "1", layer_sizes=layer_sizes, seed=seed)


def concurrent_skopeo_pulls(skopeo, hosts: list[str], reference: str, root: Path) -> list[Path]:
    """Start one skopeo process per host entry at once; wait for all."""
    destinations = [root / f"client{i}" for i in range(len(hosts))]
    processes = [
        subprocess.Popen(
            [
                skopeo.binary,
                "--policy",
                str(skopeo.policy),
                "copy",
                "--src-tls-verify=false",
                "--src-no-creds",
                f"docker://{host}/{reference}",
                f"dir:{dest}",
            ],
            env=skopeo.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for host, dest in zip(hosts, destinations, strict=False)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    return destinations


def assert_pulled_correctly(destinations: list[Path], image: PushedImage) -> None:
    expected = {blob.digest.split(":")[1]: blob.data for blob in image.blobs}
    for dest in destinations:
        got = {p.name: p.read_bytes() for p in dest.iterdir() if len(p.name) == 64}
        assert got == expected, dest
        assert (dest / "manifest.json").read_bytes() == image.manifest


def test_concurrent_cold_pulls_across_worker_processes_fetch_each_blob_once(
    workers_mirror, proxy, upstream, skopeo, tmp_path
):
    image = fresh_image(upstream, [3 * MB, 4 * MB, 2 * MB])
    proxy.bytes_per_second = 20 * MB  # slow enough that every client arrives mid-fill
    mark = upstream.log_mark()
    try:
        destinations = concurrent_skopeo_pulls(skopeo, [workers_mirror.host] * CLIENTS, image.reference, tmp_path)
    finally:
        proxy.bytes_per_second = None
    assert_pulled_correctly(destinations, image)
    for blob in image.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    tag_gets = [r for r in upstream.requests_log(since=mark) if r.path.endswith("/manifests/1") and r.status != 401]
    assert len(tag_gets) == 1, "one upstream request for the tag, however many clients"
    assert workers_mirror.temp_files() == []


def test_concurrent_cold_pulls_across_replicas_fetch_each_blob_once(replicas, proxy, upstream, skopeo, tmp_path):
    image = fresh_image(upstream, [3 * MB, 4 * MB])
    proxy.bytes_per_second = 20 * MB
    mark = upstream.log_mark()
    hosts = [replicas[i % 2].host for i in range(CLIENTS)]
    try:
        destinations = concurrent_skopeo_pulls(skopeo, hosts, image.reference, tmp_path)
    finally:
        proxy.bytes_per_second = None
    assert_pulled_correctly(destinations, image)
    for blob in image.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest


def test_fill_goes_on_after_its_client_disconnects(workers_mirror, proxy, upstream):
    image = fresh_image(upstream, [6 * MB])
    layer = image.layers[0]
    proxy.bytes_per_second = 10 * MB
    mark = upstream.log_mark()
    try:
        with socket.create_connection(("127.0.0.1", workers_mirror.port), timeout=30) as sock:
            sock.sendall(
                f"GET /v2/{image.repository}/blobs/{layer.digest} HTTP/1.1\r\nHost: {workers_mirror.host}\r\n\r\n".encode()
            )
            received = b""
            while len(received) < 2 * MB:
                received += sock.recv(65536)
        # The client is gone; the blob must still land, whole and verified.
        deadline = time.monotonic() + 60
        while layer.digest not in workers_mirror.stored_blobs():
            assert time.monotonic() < deadline, workers_mirror.log_tail()
            time.sleep(0.1)
    finally:
        proxy.bytes_per_second = None
    assert workers_mirror.stored_blobs()[layer.digest].read_bytes() == layer.data
    again = requests.get(f"{workers_mirror.url}/v2/{image.repository}/blobs/{layer.digest}", timeout=30)
    assert again.content == layer.data
    assert upstream.blob_gets(layer.digest, since=mark) == 1


def test_upstream_dying_mid_blob_hangs_nobody_and_caches_nothing_corrupt(workers_mirror, proxy, upstream):
    image = fresh_image(upstream, [5 * MB])
    layer = image.layers[0]
    url = f"{workers_mirror.url}/v2/{image.repository}/blobs/{layer.digest}"
    proxy.bytes_per_second = 10 * MB
    proxy.cut_next(f"/blobs/{layer.digest}", after_bytes=2 * MB)

    def fetch(_: int) -> bytes | None:
        """The body a client got, or None when the mirror's answer was an error or cut short."""
        try:
            with requests.get(url, stream=True, timeout=60) as response:
                if response.status_code != 200:
                    assert response.json()["errors"][0]["code"] in ("UNAVAILABLE", "DIGEST_INVALID")
                    return None
                body = b"".join(response.iter_content(256 * 1024))
                return body if len(body) == layer.size else None
        except requests.exceptions.ChunkedEncodingError:
            return None
        except requests.exceptions.ConnectionError:
            return None

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            bodies = list(pool.map(fetch, range(4)))  # requests' timeout bounds every wait
    finally:
        proxy.bytes_per_second = None
    assert proxy.cut_count >= 1
    for body in bodies:
        assert body is None or hashlib.sha256(body).hexdigest() == layer.digest.split(":")[1]
    stored = workers_mirror.stored_blobs().get(layer.digest)
    assert stored is None or stored.read_bytes() == layer.data
    retry = requests.get(url, timeout=60)
    assert retry.status_code == 200 and retry.content == layer.data
    assert workers_mirror.stored_blobs()[layer.digest].read_bytes() == layer.data
