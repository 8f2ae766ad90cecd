"""Tests of the end-to-end harness itself (upstream registry, token server, images,
fake upstream) using skopeo as an independent client. No mirror involved."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

from tests.support.images import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MANIFEST_ACCEPT, push_image, sha256_digest
from tests.support.skopeo import Skopeo
from tests.support.upstream_registry import UpstreamRegistry, parse_access_log


def test_anonymous_v2_gets_bearer_challenge(upstream: UpstreamRegistry) -> None:
    r = requests.get(f"{upstream.url}/v2/", timeout=5)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{upstream.token_server.realm}"' in challenge
    assert f'service="{upstream.service}"' in challenge


def test_token_server_rules(upstream: UpstreamRegistry, images) -> None:
    ts = upstream.token_server
    before = ts.request_count
    realm = ts.realm

    def get(scope: str, auth: tuple[str, str] | None = None) -> requests.Response:
        return requests.get(realm, params={"service": upstream.service, "scope": scope}, auth=auth, timeout=5)

    anon_public = get("repository:library/small:pull,push")
    anon_private = get("repository:private/secret:pull")
    authed = get("repository:private/secret:pull,push", (upstream.username, upstream.password))
    wrong = get("repository:library/small:pull", (upstream.username, "wrong"))
    assert [r.status_code for r in (anon_public, anon_private, authed, wrong)] == [200, 200, 200, 401]
    body = anon_public.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"]
    assert ts.request_count == before + 4

    import jwt

    def access(r: requests.Response) -> list[dict]:
        return jwt.decode(r.json()["token"], options={"verify_signature": False})["access"]

    assert access(anon_public) == [{"type": "repository", "name": "library/small", "actions": ["pull"]}]
    assert access(anon_private)[0]["actions"] == []
    assert access(authed)[0]["actions"] == ["pull", "push"]

    # A token is accepted by Distribution, which validates the x5c chain against the CA bundle.
    token = authed.json()["token"]
    r = requests.get(
        f"{upstream.url}/v2/private/secret/manifests/1",
        headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT},
        timeout=5,
    )
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == images.private.digest


def test_pushed_images_are_well_formed(images) -> None:
    big = images.big
    assert big.media_type == DOCKER_MANIFEST
    sizes = [b.size for b in big.layers]
    for got, want_mb in zip(sizes, [4, 6, 8, 10, 12], strict=False):
        assert abs(got - want_mb * 1024 * 1024) < 16 * 1024  # random data: gzip can't shrink it
    config = json.loads(big.config.data)
    assert config["rootfs"]["diff_ids"] == [b.diff_id for b in big.layers]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert sha256_digest(big.manifest) == big.digest
    assert images.multi.media_type == DOCKER_MANIFEST_LIST
    assert {c.platform.architecture for c in images.multi.children} == {"amd64", "arm64"}
    assert images.multi.child("arm64").digest != images.multi.child("amd64").digest


def test_skopeo_inspect_anonymous(upstream: UpstreamRegistry, images, skopeo: Skopeo) -> None:
    out = skopeo.run(
        "inspect", "--tls-verify=false", "--no-creds", "--raw", f"docker://{upstream.host}/library/small:1"
    ).stdout
    assert out == images.small.manifest
    assert "sha256:" + hashlib.sha256(out).hexdigest() == images.small.digest


def test_skopeo_inspect_multi_platform_index(upstream: UpstreamRegistry, images, skopeo: Skopeo) -> None:
    out = skopeo.run("inspect", "--tls-verify=false", "--raw", f"docker://{upstream.host}/library/multi:1").stdout
    assert sha256_digest(out) == images.multi.digest
    assert {m["digest"] for m in json.loads(out)["manifests"]} == {c.digest for c in images.multi.children}


def test_private_repository_needs_credentials(upstream: UpstreamRegistry, images, skopeo: Skopeo) -> None:
    ref = f"docker://{upstream.host}/private/secret:1"
    anon = skopeo.run("inspect", "--tls-verify=false", "--no-creds", "--raw", ref, check=False)
    assert anon.returncode != 0
    assert b"unauthorized" in anon.stderr.lower() or b"authentication required" in anon.stderr.lower()
    authed = skopeo.run("inspect", "--tls-verify=false", "--creds", upstream.creds, "--raw", ref)
    assert sha256_digest(authed.stdout) == images.private.digest


def test_skopeo_copy_big_image(upstream: UpstreamRegistry, images, skopeo: Skopeo, tmp_path: Path) -> None:
    big = images.big
    dest = tmp_path / "big"
    mark = upstream.log_mark()
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{upstream.host}/library/big:1",
        f"dir:{dest}",
    )
    # Every blob file (named by hex digest) hashes to its name, and all are present.
    files = {p.name: p for p in dest.iterdir() if p.name not in ("manifest.json", "version")}
    for name, p in files.items():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == name
    assert set(files) == {b.digest.removeprefix("sha256:") for b in big.blobs}
    assert (dest / "manifest.json").read_bytes() == big.manifest

    # Exactly one GET per blob upstream during the copy.
    for blob in big.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1, blob.digest
    log = upstream.access_log(since=mark)
    assert ("GET", "/v2/library/big/manifests/1") in log
    assert all(p.startswith("/v2/") for _, p in log)


def test_access_log_marks_and_401s(upstream: UpstreamRegistry, images) -> None:
    mark = upstream.log_mark()
    requests.get(f"{upstream.url}/v2/library/small/manifests/1", timeout=5)  # anonymous → 401
    headers = upstream.auth_headers("library/small", "pull")
    requests.get(f"{upstream.url}/v2/library/small/blobs/{images.small.layers[0].digest}", headers=headers, timeout=5)
    requests.head(f"{upstream.url}/v2/library/small/blobs/{images.small.layers[0].digest}", headers=headers, timeout=5)
    reqs = upstream.requests_log(since=mark)
    assert [(r.method, r.path, r.status) for r in reqs] == [
        ("GET", "/v2/library/small/manifests/1", 401),
        ("GET", f"/v2/library/small/blobs/{images.small.layers[0].digest}", 200),
        ("HEAD", f"/v2/library/small/blobs/{images.small.layers[0].digest}", 200),
    ]
    assert upstream.blob_gets(images.small.layers[0].digest, since=mark) == 1


def test_log_parser_fallback_counts_each_request_once() -> None:
    # Distribution 2.8 lines with the access log disabled: several logrus lines per request.
    lines = [
        'time="t" level=info msg="authorized request" http.request.id=a http.request.method=GET '
        "http.request.uri=/v2/x/blobs/sha256:1 vars.name=x",
        'time="t" level=info msg="response completed" http.request.id=a http.request.method=GET '
        "http.request.uri=/v2/x/blobs/sha256:1 http.response.status=200",
        'time="t" level=warning msg="error authorizing context: authorization token required" '
        "http.request.id=b http.request.method=HEAD http.request.uri=/v2/",
        'time="t" level=error msg="response completed with error" http.request.id=c http.request.method=GET '
        'http.request.uri="/v2/x/manifests/l?y=1" http.response.status=404',
    ]
    assert [(r.method, r.path, r.uri, r.status) for r in parse_access_log(lines)] == [
        ("GET", "/v2/x/blobs/sha256:1", "/v2/x/blobs/sha256:1", 200),
        ("HEAD", "/v2/", "/v2/", 401),
        ("GET", "/v2/x/manifests/l", "/v2/x/manifests/l?y=1", 404),
    ]


def test_fake_upstream_serves_corrupt_blob(fake_upstream) -> None:
    base = fake_upstream.url
    assert requests.get(f"{base}/v2/", timeout=5).json() == {}
    m = requests.get(f"{base}/v2/library/bad/manifests/latest", timeout=5)
    assert m.status_code == 200 and m.headers["Docker-Content-Digest"] == sha256_digest(m.content)
    manifest = json.loads(m.content)
    layer = manifest["layers"][0]
    blob_path = f"/v2/library/bad/blobs/{layer['digest']}"
    before = len(fake_upstream.seen(blob_path, "GET"))
    r = requests.get(f"{base}/v2/library/bad/blobs/{layer['digest']}", timeout=5)
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == layer["digest"]
    assert len(r.content) == layer["size"] == int(r.headers["Content-Length"])
    assert sha256_digest(r.content) != layer["digest"]
    assert len(fake_upstream.seen(blob_path, "GET")) == before + 1
    cfg = requests.get(f"{base}/v2/library/bad/blobs/{manifest['config']['digest']}", timeout=5)
    assert sha256_digest(cfg.content) == manifest["config"]["digest"]
    head = requests.head(f"{base}/v2/library/bad/blobs/{layer['digest']}", timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"] and not head.content


def test_retag_moves_the_tag(upstream: UpstreamRegistry, images) -> None:
    from tests.support.images import current_digest

    assert current_digest(upstream, "library/moving", "latest") == images.moving_current.digest
    old = images.moving_current
    new = images.retag_moving()
    assert new.digest != old.digest
    assert current_digest(upstream, "library/moving", "latest") == new.digest


def test_stop_and_start_keeps_storage(upstream: UpstreamRegistry, images) -> None:
    port = upstream.port
    upstream.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{upstream.url}/v2/", timeout=2)
    upstream.start()
    assert upstream.port == port
    headers = {**upstream.auth_headers("library/small", "pull"), "Accept": MANIFEST_ACCEPT}
    r = requests.get(f"{upstream.url}/v2/library/small/manifests/1", headers=headers, timeout=5)
    assert r.status_code == 200 and r.content == images.small.manifest


def test_push_to_fresh_repo_and_oci_flag(upstream: UpstreamRegistry) -> None:
    img = push_image(upstream, "harness/oci", "v1", layer_sizes=[10 * 1024], seed=77, oci=True)
    headers = {**upstream.auth_headers("harness/oci", "pull"), "Accept": MANIFEST_ACCEPT}
    r = requests.get(f"{upstream.url}/v2/harness/oci/manifests/v1", headers=headers, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == img.media_type == "application/vnd.oci.image.manifest.v1+json"
