"""Pulls through the mirror with skopeo from a real upstream (Distribution with token auth)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
import time

import requests

from tests.e2e.conftest import TAG_TTL
from tests.support.images import MANIFEST_ACCEPT, push_image, sha256_digest

OCI_ONLY_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def copy(skopeo, mirror, reference: str, dest: Path, *extra: str, check: bool = True):
    return skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        *extra,
        f"docker://{mirror.host}/{reference}",
        f"dir:{dest}",
        check=check,
    )


def dir_blobs(dest: Path) -> dict[str, bytes]:
    """What skopeo wrote: sha256 hex name → bytes (manifest and version files excluded)."""
    return {p.name: p.read_bytes() for p in dest.iterdir() if len(p.name) == 64}


def test_cold_then_warm_pull_fetches_each_blob_once(skopeo, mirror, upstream, images, tmp_path):
    big = images.big
    mark = upstream.log_mark()
    copy(skopeo, mirror, "library/big:1", tmp_path / "cold")
    copy(skopeo, mirror, "library/big:1", tmp_path / "warm")

    cold, warm = dir_blobs(tmp_path / "cold"), dir_blobs(tmp_path / "warm")
    assert cold == warm
    assert set(cold) == {blob.digest.split(":")[1] for blob in big.blobs}
    for name, content in cold.items():
        assert hashlib.sha256(content).hexdigest() == name
    assert (tmp_path / "warm" / "manifest.json").read_bytes() == big.manifest

    for blob in big.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    stored = mirror.stored_blobs()
    for blob in big.blobs:
        assert hashlib.sha256(stored[blob.digest].read_bytes()).hexdigest() == blob.digest.split(":")[1]
    assert mirror.temp_files() == []
    # Every hit is recorded for eviction (the e2e mirror writes pull times at once).
    pulled = mirror.query(
        "SELECT digest FROM registry_blob WHERE last_pulled_at IS NOT NULL AND digest IN ({})".format(
            ",".join("?" * len(big.blobs))
        ),
        *[b.digest for b in big.blobs],
    )
    assert len(pulled) == len(big.blobs)


def test_tokens_are_cached_per_scope(skopeo, mirror, upstream, images, tmp_path):
    tokens_before = len(upstream.token_server.requests)
    copy(skopeo, mirror, "library/small:1", tmp_path / "a")
    copy(skopeo, mirror, "library/small:1", tmp_path / "b")
    # At most one account token per server worker process for the repository's pull scope
    # (anonymous ones are the mirror asking whether anonymous clients may pull it).
    asked = [r for r in upstream.token_server.requests[tokens_before:] if r.user == upstream.username]
    assert len(asked) <= 2


def test_pull_by_digest_and_by_short_name(skopeo, mirror, upstream, images, tmp_path):
    small = images.small
    copy(skopeo, mirror, f"library/small@{small.digest}", tmp_path / "by-digest")
    assert (tmp_path / "by-digest" / "manifest.json").read_bytes() == small.manifest
    # One-component names mean library/<name>, as on Docker Hub.
    copy(skopeo, mirror, "small:1", tmp_path / "short")
    assert dir_blobs(tmp_path / "short") == dir_blobs(tmp_path / "by-digest")
    raw = skopeo.run("inspect", "--tls-verify=false", "--no-creds", "--raw", f"docker://{mirror.host}/small:1").stdout
    assert sha256_digest(raw) == small.digest


def test_multi_platform_index_and_one_platform(skopeo, mirror, upstream, images, tmp_path):
    multi = images.multi
    mark = upstream.log_mark()
    copy(skopeo, mirror, "library/multi:1", tmp_path / "all", "--all")
    assert (tmp_path / "all" / "manifest.json").read_bytes() == multi.manifest
    for child in multi.children:
        assert (tmp_path / "all" / f"{child.digest.split(':')[1]}.manifest.json").read_bytes() == child.manifest
    arm = multi.child("arm64")
    copy(skopeo, mirror, "library/multi:1", tmp_path / "arm", "--override-arch", "arm64")
    assert (tmp_path / "arm" / "manifest.json").read_bytes() == arm.manifest
    assert set(dir_blobs(tmp_path / "arm")) == {b.digest.split(":")[1] for b in arm.blobs}
    for blob in multi.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1
    # The index and its children are cached: served by digest with no upstream contact.
    before = upstream.log_mark()
    for child in multi.children:
        response = requests.get(
            f"{mirror.url}/v2/library/multi/manifests/{child.digest}", headers={"Accept": OCI_ONLY_ACCEPT}, timeout=10
        )
        assert response.status_code == 200 and response.content == child.manifest
        assert response.headers["Docker-Content-Digest"] == child.digest
        assert response.headers["Content-Type"] == child.media_type
    assert upstream.access_log(since=before) == []


def test_manifest_and_blob_headers(mirror, images):
    small = images.small
    url = f"{mirror.url}/v2/library/small"
    head = requests.head(f"{url}/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Docker-Content-Digest"] == small.digest
    assert head.headers["Content-Length"] == str(len(small.manifest))
    assert head.headers["Content-Type"] == small.media_type
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    layer = small.layers[0]
    for method in ("GET", "HEAD"):
        response = requests.request(method, f"{url}/blobs/{layer.digest}", timeout=10)
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == layer.digest
        assert response.headers["Content-Length"] == str(layer.size)
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.content == (layer.data if method == "GET" else b"")


def test_blob_ranges_on_hits(mirror, images):
    layer = images.small.layers[0]
    url = f"{mirror.url}/v2/library/small/blobs/{layer.digest}"
    requests.get(url, timeout=10).raise_for_status()  # make sure it is cached
    cases = {"bytes=0-99": layer.data[:100], "bytes=100-": layer.data[100:], "bytes=-10": layer.data[-10:]}
    for header, expected in cases.items():
        response = requests.get(url, headers={"Range": header}, timeout=10)
        assert response.status_code == 206, header
        assert response.content == expected, header
        assert response.headers["Content-Length"] == str(len(expected))
    response = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert response.headers["Content-Range"] == f"bytes 10-19/{layer.size}"
    for header in (f"bytes={layer.size}-", "bytes=9-3", "lines=1-2"):
        response = requests.get(url, headers={"Range": header}, timeout=10)
        assert response.status_code == 416, header
        assert response.json()["errors"][0]["code"] == "RANGE_INVALID"


def test_head_of_missing_blob_never_downloads_it(mirror, upstream, images):
    layer = push_image(upstream, "library/head-only", "1", layer_sizes=[64 * 1024], seed=9700).layers[0]
    mark = upstream.log_mark()
    response = requests.head(f"{mirror.url}/v2/library/head-only/blobs/{layer.digest}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(layer.size)
    assert response.headers["Docker-Content-Digest"] == layer.digest
    methods = [r.method for r in upstream.requests_log(since=mark) if layer.digest in r.path and r.status != 401]
    assert methods == ["HEAD"]
    assert layer.digest not in mirror.stored_blobs()


def test_blob_cached_for_one_repository_is_served_for_another_only_once_confirmed(mirror, upstream, images):
    layer = images.small.layers[0]
    requests.get(f"{mirror.url}/v2/library/small/blobs/{layer.digest}", timeout=10).raise_for_status()
    # Not in library/big upstream: the cached bytes must not leak through that name.
    response = requests.get(f"{mirror.url}/v2/library/big/blobs/{layer.digest}", timeout=10)
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_missing_things_are_404_with_codes(mirror, images):
    url = f"{mirror.url}/v2"
    cases = {
        f"{url}/library/small/manifests/no-such-tag": "MANIFEST_UNKNOWN",
        f"{url}/library/small/manifests/sha256:{'0' * 64}": "MANIFEST_UNKNOWN",
        f"{url}/library/small/blobs/sha256:{'0' * 64}": "BLOB_UNKNOWN",
        f"{url}/library/nonexistent/tags/list": "NAME_UNKNOWN",
    }
    for target, code in cases.items():
        response = requests.get(target, timeout=10)
        assert response.status_code == 404, target
        assert response.json()["errors"][0]["code"] == code, target


def test_tags_list_and_catalog(skopeo, mirror, images):
    listed = json.loads(
        skopeo.run("list-tags", "--tls-verify=false", "--no-creds", f"docker://{mirror.host}/library/small").stdout
    )
    assert listed["Tags"] == ["1"]
    first = requests.get(f"{mirror.url}/v2/library/small/tags/list?n=0", timeout=10)
    assert first.json() == {"name": "library/small", "tags": []}
    catalog = requests.get(f"{mirror.url}/v2/_catalog", timeout=10).json()
    assert "library/small" in catalog["repositories"]


def test_tags_list_pagination(mirror, upstream, images):
    from tests.support.images import tag_existing

    for tag in ("2", "3"):
        tag_existing(upstream, images.small, tag)
    page = requests.get(f"{mirror.url}/v2/library/small/tags/list?n=2", timeout=10)
    assert page.json() == {"name": "library/small", "tags": ["1", "2"]}
    assert page.headers["Link"] == '</v2/library/small/tags/list?n=2&last=2>; rel="next"'
    rest = requests.get(f"{mirror.url}/v2/library/small/tags/list?n=2&last=2", timeout=10)
    assert rest.json()["tags"] == ["3"]
    assert "Link" not in rest.headers


def test_tag_moved_upstream_is_served_after_ttl(skopeo, mirror, upstream, images, tmp_path):
    before = images.moving_current
    copy(skopeo, mirror, "library/moving:latest", tmp_path / "before")
    assert (tmp_path / "before" / "manifest.json").read_bytes() == before.manifest
    moved = images.retag_moving()
    time.sleep(TAG_TTL + 0.5)
    mark = upstream.log_mark()
    copy(skopeo, mirror, "library/moving:latest", tmp_path / "after")
    assert (tmp_path / "after" / "manifest.json").read_bytes() == moved.manifest
    tag_requests = [e.method for e in upstream.access_log(since=mark) if e.path.endswith("/manifests/latest")]
    assert tag_requests and set(tag_requests) == {"HEAD"}, "a tag is revalidated with HEAD, never a GET"


def test_private_repository_is_not_handed_to_anonymous_clients(skopeo, mirror, images, tmp_path):
    # The account could pull it, but the upstream grants anonymous clients nothing there: the
    # mirror does not hand it out without a rule (tests/e2e/test_access.py logs in to pull it).
    refused = copy(skopeo, mirror, "private/secret:1", tmp_path / "private", check=False)
    assert refused.returncode != 0 and b"denied" in refused.stderr.lower()


def test_upstream_down_cached_images_still_pull(skopeo, mirror, upstream, images, tmp_path):
    copy(skopeo, mirror, "library/small:1", tmp_path / "warm-up")
    upstream.stop()
    try:
        time.sleep(TAG_TTL + 0.5)  # the tag must be revalidated, and cannot be
        copy(skopeo, mirror, "library/small:1", tmp_path / "by-tag")
        assert dir_blobs(tmp_path / "by-tag") == dir_blobs(tmp_path / "warm-up")
        copy(skopeo, mirror, f"library/small@{images.small.digest}", tmp_path / "by-digest")
        stale = requests.get(f"{mirror.url}/v2/library/small/manifests/1", timeout=30)
        assert stale.status_code == 200
        assert "Stale" in stale.headers["Warning"]

        failed = copy(skopeo, mirror, "library/never-pulled:1", tmp_path / "uncached", check=False)
        assert failed.returncode != 0
        response = requests.get(f"{mirror.url}/v2/library/never-pulled/manifests/1", timeout=30)
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        upstream.start()


def test_corrupt_blob_is_never_stored_nor_served(skopeo, broken_mirror, fake_upstream, broken_image, tmp_path):
    failed = copy(skopeo, broken_mirror, "library/bad:latest", tmp_path / "bad", check=False)
    assert failed.returncode != 0
    digest = broken_image.layers[0].digest
    assert digest not in broken_mirror.stored_blobs()
    assert broken_mirror.temp_files() == []
    # The next request goes upstream again (nothing was cached) and fails again, cleanly:
    # a blob this small is verified before the response starts.
    asked = len(fake_upstream.seen(f"/v2/library/bad/blobs/{digest}", "GET"))
    response = requests.get(f"{broken_mirror.url}/v2/library/bad/blobs/{digest}", timeout=10)
    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert len(fake_upstream.seen(f"/v2/library/bad/blobs/{digest}", "GET")) == asked + 1
    assert digest not in broken_mirror.stored_blobs()
    assert broken_mirror.temp_files() == []
    # A good blob of the same upstream is stored as usual.
    config = requests.get(f"{broken_mirror.url}/v2/library/bad/blobs/{broken_image.config.digest}", timeout=10)
    assert config.content == broken_image.config.data
    assert broken_image.config.digest in broken_mirror.stored_blobs()


def test_tls_probe_on_the_http_port_is_refused_at_once(mirror):
    """Clients with tls-verify=false try HTTPS first: they must get an answer, not a stall."""
    import socket

    with socket.create_connection(("127.0.0.1", mirror.port), timeout=5) as sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"hello")
        answer = sock.recv(16)
    assert answer[:1] == b"\x15", "a TLS alert record"
