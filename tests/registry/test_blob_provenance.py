"""Blob provenance, size caps and bounded tag lists, called directly (no HTTP in front of the
cache): the session's token-auth upstream, whose `private/secret` only the mirror's account
reads, and a hostile registry on loopback."""

from __future__ import annotations

from collections.abc import Iterator
import json
import threading
import time

import pytest

from registry import oci
from registry.models import Blob, ManifestReference, Repository, RepositoryBlob, Upstream, UpstreamAccount
from registry.proxy import blobs, fills, listings, manifests
from registry.proxy.fills import UpstreamDigestMismatch
from registry.storage import locks
from registry.storage.blobstore import BlobStore, FilesystemStore
from registry.upstreams.client import BlobSizeInvalid
from registry.upstreams.routing import Route
from tests.support.fake_registry import FakeRegistry, answer
from tests.support.images import PushedImage, build_image, sha256_digest

pytestmark = pytest.mark.django_db(transaction=True)  # fills write from their own threads

ANYONE = blobs.BlobReader(may_read=lambda upstream, repository: True, is_private=lambda upstream, repository: False)
NOBODY = blobs.BlobReader(may_read=lambda upstream, repository: False, is_private=lambda upstream, repository: False)
PRIVATE_ORIGIN = blobs.BlobReader(
    may_read=lambda upstream, repository: True, is_private=lambda upstream, repository: True
)


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 1
    settings.MIRROR_UPSTREAM_READ_TIMEOUT = 5
    return FilesystemStore(tmp_path)


@pytest.fixture
def hub(settings, store, upstream) -> Upstream:
    hub = Upstream.objects.create(name="hub", url=upstream.url, library_prefix=True)
    account = UpstreamAccount(upstream=hub, username=upstream.username)
    account.set_secret(upstream.password)
    account.save()
    return hub


@pytest.fixture
def hostile() -> Iterator[FakeRegistry]:
    with FakeRegistry() as registry:
        yield registry


@pytest.fixture
def evil(settings, store, hostile) -> Upstream:
    return Upstream.objects.create(name="evil", url=hostile.url)


def drain(found) -> bytes:
    if isinstance(found, blobs.CachedBlob):
        return found.location.path.read_bytes()
    return b"".join(found.chunks)


def fill_private(hub: Upstream, store: BlobStore, image: PushedImage) -> None:
    manifests.get_manifest(Route(hub, "private/secret"), oci.parse_reference("1"))
    for blob in image.blobs:
        assert (
            drain(blobs.fetch_blob(Route(hub, "private/secret"), oci.parse_digest(blob.digest), store, PRIVATE_ORIGIN))
            == blob.data
        )


def claim(hostile: FakeRegistry, repository: str, image: PushedImage) -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": image.media_type,
            "config": {"mediaType": image.config.media_type, "size": image.config.size, "digest": image.config.digest},
            "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in image.layers],
        }
    ).encode()
    hostile.script("GET", f"/v2/{repository}/manifests/1", answer(200, manifest, Content_Type=image.media_type))
    for blob in image.blobs:
        hostile.script("HEAD", f"/v2/{repository}/blobs/{blob.digest}", answer(200, Content_Length=str(blob.size)))


def test_descriptor_sizes_are_kept_with_the_references(hub, images):
    manifests.get_manifest(Route(hub, "small"), oci.parse_reference("1"))
    sizes = dict(ManifestReference.objects.filter(kind="blob").values_list("digest", "size"))
    assert sizes == {blob.digest: blob.size for blob in images.small.blobs}


def test_a_fill_records_its_origin_and_a_delivered_link(hub, store, images):
    fill_private(hub, store, images.private)
    blob = Blob.objects.select_related("origin").get(digest=images.private.layers[0].digest)
    assert (blob.origin.name, blob.origin_private) == ("private/secret", True)
    assert RepositoryBlob.objects.get(digest=blob.digest, repository=blob.origin).delivered


def test_a_claim_serves_a_private_blob_only_to_who_may_read_its_origin(hub, evil, hostile, store, images):
    fill_private(hub, store, images.private)
    claim(hostile, "attacker/image", images.private)
    manifests.get_manifest(Route(evil, "attacker/image"), oci.parse_reference("1"))
    layer = oci.parse_digest(images.private.layers[0].digest)

    with pytest.raises(oci.BlobUnknown):  # asked for the bytes; it has none
        blobs.fetch_blob(Route(evil, "attacker/image"), layer, store, NOBODY)
    assert (
        blobs.stat_blob(Route(evil, "attacker/image"), layer, store, NOBODY) == images.private.layers[0].size
    )  # B's word
    assert not RepositoryBlob.objects.get(repository__upstream=evil, digest=str(layer)).delivered

    allowed = blobs.fetch_blob(Route(evil, "attacker/image"), layer, store, ANYONE)
    assert isinstance(allowed, blobs.CachedBlob) and drain(allowed) == images.private.layers[0].data


def test_other_bytes_from_the_claiming_upstream_are_a_digest_mismatch(hub, evil, hostile, store, images):
    fill_private(hub, store, images.private)
    layer = images.private.layers[0]
    hostile.script("GET", f"/v2/forger/image/blobs/{layer.digest}", answer(200, b"\0" * layer.size))
    with pytest.raises(UpstreamDigestMismatch):
        blobs.fetch_blob(Route(evil, "forger/image"), oci.parse_digest(layer.digest), store, NOBODY)


def test_an_upstream_that_delivers_the_bytes_makes_the_blob_public(hub, evil, hostile, store, images):
    fill_private(hub, store, images.private)
    config = images.private.config
    hostile.script("GET", f"/v2/public/base/blobs/{config.digest}", answer(200, config.data))
    found = blobs.fetch_blob(Route(evil, "public/base"), oci.parse_digest(config.digest), store, NOBODY)
    assert drain(found) == config.data
    blob = Blob.objects.select_related("origin").get(digest=config.digest)
    assert (blob.origin.name, blob.origin_private) == ("public/base", False)
    assert RepositoryBlob.objects.get(repository__upstream=evil, digest=config.digest).delivered


def served_image(hostile: FakeRegistry, repository: str, size: int, seed: int) -> PushedImage:
    image = build_image(repository, "1", layer_sizes=[size], seed=seed)
    hostile.serve(repository, image)
    return image


def test_an_unsized_fill_is_held_to_its_descriptor_size(evil, hostile, store):
    image = served_image(hostile, "cap/unsized", 64 * 1024, seed=7201)
    layer = image.layers[0]
    hostile.script("GET", f"/v2/cap/unsized/blobs/{layer.digest}", answer(200, layer.data + b"\0" * 4096, unsized=True))
    manifests.get_manifest(Route(evil, "cap/unsized"), oci.parse_reference("1"))
    with pytest.raises(BlobSizeInvalid):  # fits in the held-back part: a clean error before any byte
        drain(blobs.fetch_blob(Route(evil, "cap/unsized"), oci.parse_digest(layer.digest), store))
    assert store.size(oci.parse_digest(layer.digest)) is None


def test_a_content_length_other_than_the_descriptor_is_refused_unread(evil, hostile, store):
    image = served_image(hostile, "cap/sized", 64 * 1024, seed=7202)
    layer = image.layers[0]
    hostile.script("GET", f"/v2/cap/sized/blobs/{layer.digest}", answer(200, layer.data + b"\0"))
    manifests.get_manifest(Route(evil, "cap/sized"), oci.parse_reference("1"))
    with pytest.raises(BlobSizeInvalid):
        blobs.fetch_blob(Route(evil, "cap/sized"), oci.parse_digest(layer.digest), store)


def test_without_a_descriptor_a_fill_is_held_to_the_maximum(settings, evil, hostile, store):
    settings.MIRROR_BLOB_MAX_BYTES = 1000
    data = b"x" * 5000
    digest = sha256_digest(data)
    hostile.script("GET", f"/v2/no/manifest/blobs/{digest}", answer(200, data, unsized=True))
    download = blobs._open_download(evil, "no/manifest", oci.parse_digest(digest))
    with pytest.raises(BlobSizeInvalid):
        b"".join(download.chunks())
    download.close()
    hostile.script("GET", f"/v2/no/manifest/blobs/{digest}", answer(200, data))
    with pytest.raises(BlobSizeInvalid):  # a Content-Length past the maximum: refused unread
        blobs._open_download(evil, "no/manifest", oci.parse_digest(digest))


def test_a_malformed_upstream_digest_is_the_upstreams_fault():
    with pytest.raises(oci.ManifestInvalid) as refused:
        manifests.upstream_digest("sha256:nothex")
    assert refused.value.status == 502
    assert str(manifests.upstream_digest("sha256:" + "a" * 64)) == "sha256:" + "a" * 64


def test_a_tag_list_is_remembered_and_one_past_the_limit_refused(settings, evil, hostile):
    settings.MIRROR_TAG_LIST_TTL = 60
    settings.MIRROR_TAG_LIST_MAX_BYTES = 1000
    hostile.script("GET", "/v2/some/tags/tags/list", answer(200, {"name": "some/tags", "tags": ["b", "a"]}))
    assert listings.list_tags(Route(evil, "some/tags"), None, None).tags == ["a", "b"]
    assert listings.list_tags(Route(evil, "some/tags"), None, None).tags == ["a", "b"]
    assert len(hostile.seen("/v2/some/tags/tags/list")) == 1
    hostile.script(
        "GET", "/v2/big/tags/tags/list", answer(200, {"name": "big/tags", "tags": [f"t{i}" for i in range(500)]})
    )
    with pytest.raises(listings.UpstreamTooLarge) as refused:
        listings.list_tags(Route(evil, "big/tags"), None, None)
    assert (refused.value.status, refused.value.code) == (502, "SIZE_INVALID")


def test_a_fill_through_another_repository_is_not_followed_by_who_may_not_read_it(evil, store):
    """A fill in progress for a private repository of upstream A: a client of B's name waits
    for its commit rather than being fed its bytes, and is then judged as for a hit."""
    private_upstream = Upstream.objects.create(name="a", url="http://127.0.0.1:9")
    origin = Repository.objects.create(upstream=private_upstream, name="private/secret")
    data = b"private bytes " * 1000
    digest = oci.parse_digest(sha256_digest(data))
    lock = locks.named_lock(f"fill:{digest}")
    assert lock.try_acquire()
    fill = store.begin_fill(digest, len(data))
    fill.write(data)  # all there, as a follower would read it
    sidecar = fills.Sidecar(store, digest)
    sidecar.write(
        fills.FillState(temp=fill.temp_path.name, size=len(data), source=f"{private_upstream.pk}/{origin.name}")
    )
    outcome: list = []

    def client_of_b() -> None:
        try:
            outcome.append(drain(blobs.fetch_blob(Route(evil, "attacker/image"), digest, store, NOBODY)))
        except oci.RegistryError as error:
            outcome.append(error)

    thread = threading.Thread(target=client_of_b)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive() and outcome == [], "waiting for the commit, fed nothing"
    fill.commit()
    Blob.objects.create(digest=str(digest), size=len(data), origin=origin, origin_private=True)
    sidecar.delete()
    lock.release()
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], oci.BlobUnknown), outcome  # B has no such blob


def test_a_tag_list_is_served_stale_from_the_last_answer_while_the_upstream_is_down(settings, evil, hostile):
    settings.MIRROR_TAG_LIST_TTL = 1
    hostile.script("GET", "/v2/some/tags/tags/list", answer(200, {"name": "some/tags", "tags": ["v2", "v1"]}))
    assert listings.list_tags(Route(evil, "some/tags"), None, None) == listings.TagPage(["v1", "v2"], None)
    hostile.script("GET", "/v2/some/tags/tags/list", answer(503, b"down"))
    deadline = time.monotonic() + 10
    while len(hostile.seen("/v2/some/tags/tags/list")) < 2:  # the first answer expires, the upstream is asked again
        assert time.monotonic() < deadline
        stale = listings.list_tags(Route(evil, "some/tags"), None, None)
        time.sleep(0.2)
    assert stale == listings.TagPage(["v1", "v2"], None, stale=True)
