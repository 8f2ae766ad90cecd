"""Bounded answers, end to end: a mirror (real server processes) of a hostile upstream that
sends a tag list of a million tags, blobs longer than their descriptors, malformed digests; and
an S3-backed mirror whose redirects to presigned URLs must not be kept by clients."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
import json
from pathlib import Path
import time

import pytest
import requests

from tests.support.fake_registry import FakeRegistry, answer
from tests.support.images import MANIFEST_ACCEPT, PushedImage, build_image
from tests.support.mirror import MirrorProcess

MB = 1024 * 1024
MILLION_TAGS = {"name": "huge/tags", "tags": [f"t{i:07d}" for i in range(1_000_000)]}


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeRegistry]:
    with FakeRegistry() as registry:
        yield registry


@pytest.fixture(scope="module")
def bounded(hostile, tmp_path_factory) -> Iterator[MirrorProcess]:
    """One server process (a tag list is remembered per process), tags revalidated on every pull."""
    process = MirrorProcess(
        tmp_path_factory.mktemp("bounded") / "data",
        hostile.url,
        MIRROR_WEB_WORKERS="1",
        MIRROR_TAG_TTL="0",
        MIRROR_EMBEDDED_WORKERS="false",
    ).start()
    yield process
    process.stop()


def peak_memory(process: MirrorProcess) -> int:
    """The largest peak resident size (bytes) of the mirror's processes (its process group)."""
    peak = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != process.process.pid:  # process group
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) * 1024)
    return peak


def error_code(response: requests.Response) -> str:
    return response.json()["errors"][0]["code"]


def test_a_million_tags_are_refused_without_reading_them_whole(bounded, hostile):
    body = json.dumps(MILLION_TAGS).encode()
    assert len(body) > 10 * MB
    hostile.script("GET", "/v2/huge/tags/tags/list", answer(200, body, Content_Type="application/json"))
    url = f"{bounded.url}/v2/huge/tags/tags/list"

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: requests.get(url, timeout=60), range(16)))

    assert {a.status_code for a in answers} == {502}
    assert {error_code(a) for a in answers} == {"SIZE_INVALID"}
    sent = hostile.sent("/v2/huge/tags/tags/list")
    assert sent and max(sent) < len(body), "the mirror stopped reading at its limit"
    # 16 parses of a million tags took one worker past 600 MB; a bounded read stays near its start.
    assert peak_memory(bounded) < 300 * MB


def test_a_tag_list_is_asked_once_within_its_ttl_and_n_goes_upstream(bounded, hostile):
    tags = ["b", "a", "c", "e", "d"]
    hostile.script("GET", "/v2/some/tags/tags/list", answer(200, {"name": "some/tags", "tags": tags}))
    url = f"{bounded.url}/v2/some/tags/tags/list"
    for _ in range(5):
        listed = requests.get(url, timeout=10)
        assert listed.status_code == 200 and listed.json()["tags"] == sorted(tags)
    assert len(hostile.seen("/v2/some/tags/tags/list")) == 1, "asked once within MIRROR_TAG_LIST_TTL"

    page = requests.get(url, params={"n": "2"}, timeout=10)
    assert page.json()["tags"] == ["a", "b"] and 'rel="next"' in page.headers["Link"]
    huge_page = requests.get(url, params={"n": "50000"}, timeout=10)
    assert huge_page.status_code == 200
    asked = [s.query.get("n") for s in hostile.seen("/v2/some/tags/tags/list")]
    assert asked == [None, ["2"], ["1000"]], "n passed upstream, at most MIRROR_TAG_PAGE_MAX"


def serve_image(hostile: FakeRegistry, repository: str, layer_size: int, seed: int) -> PushedImage:
    image = build_image(repository, "1", layer_sizes=[layer_size], seed=seed)
    hostile.serve(repository, image)
    return image


def pull_manifest(mirror: MirrorProcess, image: PushedImage) -> None:
    got = requests.get(
        f"{mirror.url}/v2/{image.repository}/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=10
    )
    assert got.status_code == 200 and got.content == image.manifest


def wait_for_no_temp_files(mirror: MirrorProcess) -> None:
    deadline = time.monotonic() + 20
    while mirror.temp_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mirror.temp_files() == []


def test_an_unsized_blob_longer_than_its_descriptor_is_cut_short_and_not_stored(bounded, hostile):
    image = serve_image(hostile, "cap/unsized", 4 * MB, seed=7101)
    layer = image.layers[0]
    path = f"/v2/cap/unsized/blobs/{layer.digest}"
    hostile.script("GET", path, answer(200, layer.data + b"\0" * (60 * MB), unsized=True))
    pull_manifest(bounded, image)

    received = 0
    with requests.get(f"{bounded.url}{path}", stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(layer.size), "the descriptor's size"
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in response.iter_content(256 * 1024):
                received += len(chunk)
    assert received < layer.size, "cut short: the client never gets a complete wrong blob"
    assert layer.digest not in bounded.stored_blobs()
    wait_for_no_temp_files(bounded)
    assert max(hostile.sent(path)) < layer.size + 16 * MB, "the upstream's body was not read far past the size"


def test_a_content_length_larger_than_the_descriptor_is_refused_before_downloading(bounded, hostile):
    image = serve_image(hostile, "cap/sized", 2 * MB, seed=7102)
    layer = image.layers[0]
    path = f"/v2/cap/sized/blobs/{layer.digest}"
    hostile.script("GET", path, answer(200, layer.data + b"\0" * (40 * MB)))
    pull_manifest(bounded, image)

    refused = requests.get(f"{bounded.url}{path}", timeout=30)
    assert refused.status_code == 502 and error_code(refused) == "SIZE_INVALID"
    assert layer.digest not in bounded.stored_blobs()
    assert max(hostile.sent(path)) < 16 * MB


def test_a_malformed_upstream_digest_is_a_502(bounded, hostile):
    image = serve_image(hostile, "bad/digest", 1024, seed=7103)
    hostile.script(
        "GET",
        "/v2/bad/digest/manifests/1",
        answer(200, image.manifest, Content_Type=image.media_type, Docker_Content_Digest="sha256:not-a-digest"),
    )
    url = f"{bounded.url}/v2/bad/digest/manifests/1"
    first = requests.get(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
    assert first.status_code == 502 and error_code(first) == "MANIFEST_INVALID"

    # A tag cached, then revalidated (MIRROR_TAG_TTL=0) with a HEAD that says a malformed digest.
    other = serve_image(hostile, "bad/revalidated", 1024, seed=7104)
    pull_manifest(bounded, other)
    hostile.script(
        "HEAD",
        "/v2/bad/revalidated/manifests/1",
        answer(200, b"", Content_Type=other.media_type, Docker_Content_Digest="sha512:zz"),
    )
    revalidated = requests.get(
        f"{bounded.url}/v2/bad/revalidated/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=10
    )
    assert revalidated.status_code == 502 and error_code(revalidated) == "MANIFEST_INVALID"


@pytest.fixture(scope="module")
def s3_hostile_mirror(hostile, s3_server, tmp_path_factory) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path_factory.mktemp("s3-bounded") / "data",
        hostile.url,
        MIRROR_EMBEDDED_WORKERS="false",
        **s3_server.mirror_env(s3_server.create_bucket("bounded")),
    ).start()
    yield process
    process.stop()


def test_a_redirect_to_a_presigned_url_is_not_kept(s3_hostile_mirror, hostile):
    image = serve_image(hostile, "s3/redirected", 64 * 1024, seed=7105)
    layer = image.layers[0]
    url = f"{s3_hostile_mirror.url}/v2/s3/redirected/blobs/{layer.digest}"
    filled = requests.get(url, timeout=30)
    assert filled.status_code == 200 and filled.content == layer.data
    hit = requests.get(url, allow_redirects=False, timeout=30)
    assert hit.status_code == 307 and "X-Amz-Signature=" in hit.headers["Location"]
    assert "immutable" not in hit.headers["Cache-Control"] and "max-age=31536000" not in hit.headers["Cache-Control"]
    assert hit.headers["Cache-Control"] == "no-store"
    # The bytes themselves never change: a blob the mirror sends itself stays immutable.
    assert "immutable" in filled.headers["Cache-Control"]
