"""Blobs belong to an upstream, end to end. Upstream A is the session's token-auth registry,
whose `private/secret` only the mirror's account may read; upstream B (path prefix `evil`) is
a hostile registry whose manifest lists the private image's blob digests and which answers
HEAD 200 for them. Clients of B's name must not get A's private bytes unless they may read
A's repository; the audit log records blob reads when asked to."""

from __future__ import annotations

from collections.abc import Iterator
import json
import time

import pytest
import requests

from tests.support.fake_registry import FakeRegistry, answer
from tests.support.images import MANIFEST_ACCEPT, PushedImage, sha256_digest
from tests.support.mirror import MirrorProcess

ALICE = ("alice", "alice-password")
SETUP = """
from django.contrib.auth.models import User
User.objects.create_user("alice", password="alice-password")
"""


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeRegistry]:
    with FakeRegistry() as registry:
        yield registry


@pytest.fixture(scope="module")
def guarded(upstream, hostile, tmp_path_factory) -> Iterator[MirrorProcess]:
    """Client authentication on (alice may read what the mirror's account reads), B at /v2/evil/,
    blob reads in the audit log."""
    directory = tmp_path_factory.mktemp("provenance")
    upstreams = directory / "upstreams.yaml"
    upstreams.write_text(f"upstreams:\n  - url: {hostile.url}\n    name: evil\n    alias: evil\n")
    process = MirrorProcess(
        directory / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_UPSTREAMS=str(upstreams),
        MIRROR_AUTH="true",
        MIRROR_EMBEDDED_WORKERS="false",
        MIRROR_AUDIT_BLOBS="true",
        MIRROR_AUDIT_FLUSH_INTERVAL="1",
    ).start()
    process.manage("shell", "-c", SETUP)
    yield process
    process.stop()


def claiming_manifest(image: PushedImage) -> bytes:
    """B's manifest: A's private blobs, by digest and size, as if they were B's."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": image.media_type,
            "config": {"mediaType": image.config.media_type, "size": image.config.size, "digest": image.config.digest},
            "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in image.layers],
        }
    ).encode()


def script_claim(hostile: FakeRegistry, repository: str, image: PushedImage) -> None:
    manifest = claiming_manifest(image)
    hostile.script(
        "GET",
        f"/v2/{repository}/manifests/1",
        answer(200, manifest, Content_Type=image.media_type, Docker_Content_Digest=sha256_digest(manifest)),
    )
    for blob in image.blobs:  # "I have it" (HEAD), but no bytes behind the claim
        hostile.script("HEAD", f"/v2/{repository}/blobs/{blob.digest}", answer(200, Content_Length=str(blob.size)))


def pull_private(mirror: MirrorProcess, image: PushedImage) -> None:
    got = requests.get(
        f"{mirror.url}/v2/private/secret/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, auth=ALICE, timeout=30
    )
    assert got.status_code == 200 and got.content == image.manifest
    for blob in image.blobs:
        assert (
            requests.get(f"{mirror.url}/v2/private/secret/blobs/{blob.digest}", auth=ALICE, timeout=30).content
            == blob.data
        )


def test_a_claiming_upstream_does_not_hand_out_private_blobs(guarded, hostile, images):
    private = images.private
    pull_private(guarded, private)  # now cached, first filled through A's private repository
    recorded = guarded.query(
        "SELECT b.origin_private, r.name FROM registry_blob b JOIN registry_repository r ON b.origin_id = r.id WHERE b.digest = ?",
        private.layers[0].digest,
    )
    assert recorded == [(True, "private/secret")]
    # Refused before any lookup when asked under its own name.
    anonymous_own = requests.get(f"{guarded.url}/v2/private/secret/blobs/{private.layers[0].digest}", timeout=10)
    assert anonymous_own.status_code == 401

    script_claim(hostile, "attacker/image", private)
    listed = requests.get(
        f"{guarded.url}/v2/evil/attacker/image/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=10
    )
    assert listed.status_code == 200, "B's manifest is served: it is B's"
    for blob in private.blobs:
        path = f"/v2/evil/attacker/image/blobs/{blob.digest}"
        head = requests.head(f"{guarded.url}{path}", timeout=10)
        assert head.status_code == 200  # what B says; the mirror's copy is not B's to vouch for
        got = requests.get(f"{guarded.url}{path}", timeout=30)
        assert got.status_code == 404 and got.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert blob.data not in got.content
        assert hostile.seen(path.replace("/evil", "", 1), "GET"), "the mirror asked B for the bytes it claims to have"
    # Without even B's manifest: a HEAD 200 from B was once enough.
    bare = f"/v2/evil/other/repo/blobs/{private.layers[0].digest}"
    hostile.script("HEAD", bare.replace("/evil", "", 1), answer(200, Content_Length=str(private.layers[0].size)))
    assert requests.get(f"{guarded.url}{bare}", timeout=30).status_code == 404

    # A client that may read A's repository gets the bytes under B's name as well.
    for blob in private.blobs:
        allowed = requests.get(f"{guarded.url}/v2/evil/attacker/image/blobs/{blob.digest}", auth=ALICE, timeout=30)
        assert allowed.status_code == 200 and allowed.content == blob.data


def test_an_upstream_that_sends_other_bytes_gets_a_502_and_no_private_ones(guarded, hostile, images):
    private = images.private
    pull_private(guarded, private)
    script_claim(hostile, "forger/image", private)
    layer = private.layers[0]
    hostile.script("GET", f"/v2/forger/image/blobs/{layer.digest}", answer(200, b"\0" * layer.size))
    requests.get(f"{guarded.url}/v2/evil/forger/image/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
    got = requests.get(f"{guarded.url}/v2/evil/forger/image/blobs/{layer.digest}", timeout=30)
    assert got.status_code == 502 and got.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert layer.data not in got.content


def test_an_upstream_that_delivers_the_bytes_itself_serves_them(guarded, hostile, images):
    """The same blob in a public repository of another upstream (a shared base layer): once
    that upstream has sent the same bytes, its clients are served from the cache."""
    private = images.private
    pull_private(guarded, private)
    config = private.config
    path = f"/v2/public/base/blobs/{config.digest}"
    hostile.script("GET", path, answer(200, config.data, Content_Type="application/octet-stream"))
    first = requests.get(f"{guarded.url}/v2/evil/public/base/blobs/{config.digest}", timeout=30)
    assert first.status_code == 200 and first.content == config.data
    assert len(hostile.seen(path, "GET")) == 1
    again = requests.get(f"{guarded.url}/v2/evil/public/base/blobs/{config.digest}", timeout=30)
    assert again.status_code == 200 and again.content == config.data
    assert len(hostile.seen(path, "GET")) == 1, "delivered once: from the cache afterwards"


def blob_records(mirror: MirrorProcess, digest: str) -> list[tuple]:
    return mirror.query(
        "SELECT username, upstream, repository, reference, status FROM audit_pullrecord WHERE kind = 'blob' AND reference = ?"
        " ORDER BY id",
        digest,
    )


def test_blob_reads_are_in_the_audit_log_when_asked(guarded, hostile, images):
    private = images.private
    pull_private(guarded, private)
    layer = private.layers[0]
    requests.get(f"{guarded.url}/v2/evil/attacker/image/blobs/{layer.digest}", timeout=30)

    def seen() -> tuple[bool, bool]:
        records = blob_records(guarded, layer.digest)  # each server process flushes its own, every second
        return (
            ("alice", "private/secret", layer.digest, 200) in [(r[0], r[2], r[3], r[4]) for r in records],
            any(r[0] == "" and r[1] == "evil" and r[2] == "attacker/image" and r[4] == 404 for r in records),
        )

    deadline = time.monotonic() + 20
    while seen() != (True, True) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert seen() == (True, True), "alice's read of the private blob, and the refused anonymous one through B"
    manifest_rows = guarded.query("SELECT COUNT(*) FROM audit_pullrecord WHERE kind = 'manifest'")
    assert manifest_rows[0][0] > 0
