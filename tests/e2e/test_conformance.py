"""The pull and content-discovery checks of the OCI distribution specification, as its
conformance suite makes them, against the mirror.

Each check also runs against the upstream Distribution directly, to show the check itself
is right: where Distribution 2.8 (Debian's `docker-registry`) lacks a feature of the spec
(referrers, tag pagination, tags in lexical order) or gets one wrong (a malformed digest
as a manifest reference), that check runs against the mirror only, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
import json

import pytest

from tests.support.conformance import Target, error_codes, next_link
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    PushedImage,
    PushedIndex,
    push_image,
    push_index,
    sha256_digest,
    tag_existing,
)

BOTH = ["mirror", "distribution"]
MIRROR_ONLY = ["mirror"]

REPOSITORY = "conformance/pull"
MISSING_REPOSITORY = "conformance/no-such-repository"
TAGS = ["0.9", "latest", "multi", "v1", "v1.1", "v2-rc"]  # all the repository's tags, in lexical order
ZERO_DIGEST = "sha256:" + "0" * 64
MALFORMED_DIGESTS = ["sha256:xyz", "sha256:" + "0" * 63, "sha256:" + "A" * 64, "sha256" + "0" * 64]


@dataclass
class Content:
    image: PushedImage  # OCI image manifest, tagged v1 (and every other tag in TAGS but multi)
    index: PushedIndex  # OCI image index, tagged multi


@pytest.fixture(scope="module")
def content(upstream) -> Content:
    # The 3 MiB layer is streamed by the mirror as it fills (a miss), the small ones in one piece.
    image = push_image(upstream, REPOSITORY, "v1", layer_sizes=[32 * 1024, 3 * 1024 * 1024], seed=9400, oci=True)
    for tag in TAGS:
        if tag not in ("v1", "multi"):
            tag_existing(upstream, image, tag)
    index = push_index(upstream, REPOSITORY, "multi", layer_sizes=[16 * 1024], seed=9401, oci=True)
    return Content(image, index)


@pytest.fixture(params=BOTH)
def registry(request, mirror, upstream) -> Target:
    if request.param == "mirror":
        return Target("mirror", mirror.url, lambda repository: {})
    return Target(
        "distribution",
        upstream.url,
        lambda repository: upstream.auth_headers(repository or REPOSITORY, "pull"),
    )


def only_accept(media_type: str) -> dict[str, str]:
    return {"Accept": media_type}


# --------------------------------------------------------------------------- pull
def test_base_endpoint(registry):
    response = registry.request("GET", "/v2/")
    assert response.status_code == 200


@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_image_manifest(registry, content, by, method):
    image = content.image
    reference = "v1" if by == "tag" else image.digest
    response = registry.request(
        method, f"/v2/{REPOSITORY}/manifests/{reference}", REPOSITORY, headers=only_accept(OCI_MANIFEST)
    )
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert response.headers["Content-Length"] == str(len(image.manifest))
    assert response.headers["Content-Type"] == OCI_MANIFEST
    if method == "HEAD":
        assert response.content == b""
    else:
        assert response.content == image.manifest
        assert sha256_digest(response.content) == image.digest


@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_image_index(registry, content, by, method):
    index = content.index
    reference = "multi" if by == "tag" else index.digest
    response = registry.request(
        method, f"/v2/{REPOSITORY}/manifests/{reference}", REPOSITORY, headers=only_accept(OCI_INDEX)
    )
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == index.digest
    assert response.headers["Content-Length"] == str(len(index.manifest))
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.content == (b"" if method == "HEAD" else index.manifest)
    if method == "GET":
        # and each child, by digest, with only the image manifest type accepted
        for child in index.children:
            got = registry.request(
                "GET", f"/v2/{REPOSITORY}/manifests/{child.digest}", REPOSITORY, headers=only_accept(OCI_MANIFEST)
            )
            assert got.status_code == 200
            assert got.content == child.manifest
            assert got.headers["Docker-Content-Digest"] == child.digest


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_blobs(registry, content, method):
    for blob in content.image.blobs:
        response = registry.request(method, f"/v2/{REPOSITORY}/blobs/{blob.digest}", REPOSITORY)
        assert response.status_code == 200, blob.digest
        assert response.headers["Docker-Content-Digest"] == blob.digest
        assert response.headers["Content-Length"] == str(blob.size)
        if method == "HEAD":
            assert response.content == b""
        else:
            assert response.content == blob.data


@pytest.mark.parametrize("reference", ["no-such-tag", ZERO_DIGEST])
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_missing_manifest(registry, content, reference, method):
    response = registry.request(
        method, f"/v2/{REPOSITORY}/manifests/{reference}", REPOSITORY, headers=only_accept(OCI_MANIFEST)
    )
    assert response.status_code == 404
    if method == "HEAD":
        assert response.content == b""
    else:
        assert error_codes(response) == ["MANIFEST_UNKNOWN"]


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_manifest_of_missing_repository(registry, content, method):
    response = registry.request(
        method, f"/v2/{MISSING_REPOSITORY}/manifests/v1", MISSING_REPOSITORY, headers=only_accept(OCI_MANIFEST)
    )
    assert response.status_code == 404
    if method == "HEAD":
        assert response.content == b""
    else:
        assert error_codes(response)[0] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_missing_blob(registry, content, method):
    response = registry.request(method, f"/v2/{REPOSITORY}/blobs/{ZERO_DIGEST}", REPOSITORY)
    assert response.status_code == 404
    if method == "HEAD":
        assert response.content == b""
    else:
        assert error_codes(response) == ["BLOB_UNKNOWN"]


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS)
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_malformed_blob_digest(registry, content, digest, method):
    response = registry.request(method, f"/v2/{REPOSITORY}/blobs/{digest}", REPOSITORY)
    assert response.status_code in (400, 404)
    if method == "HEAD":
        assert response.content == b""
        return
    expected = {400: "DIGEST_INVALID", 404: "BLOB_UNKNOWN"}[response.status_code]
    # The spec lets a 4xx body be in any format, but JSON only as OCI errors. Distribution's
    # router answers a path that holds no digest at all with a plain-text 404; the mirror
    # always answers OCI errors.
    if registry.name == "mirror" or response.headers.get("Content-Type", "").startswith("application/json"):
        assert error_codes(response) == [expected]


# Distribution 2.8 takes a malformed digest in a manifest reference for a tag and answers
# 500 UNKNOWN (the tag's storage path is invalid): not a check of the test, so mirror only.
@pytest.mark.parametrize("registry", MIRROR_ONLY, indirect=True)
@pytest.mark.parametrize("digest", MALFORMED_DIGESTS[:3])
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_malformed_manifest_digest(registry, content, digest, method):
    response = registry.request(
        method, f"/v2/{REPOSITORY}/manifests/{digest}", REPOSITORY, headers=only_accept(OCI_MANIFEST)
    )
    assert response.status_code in (400, 404)
    if method == "HEAD":
        assert response.content == b""
    else:
        expected = {400: "DIGEST_INVALID", 404: "MANIFEST_UNKNOWN"}[response.status_code]
        assert error_codes(response) == [expected]


# --------------------------------------------------------------------------- content discovery
def tags_page(registry: Target, query: str = "", repository: str = REPOSITORY):
    response = registry.request("GET", f"/v2/{repository}/tags/list{query}", repository)
    assert response.status_code == 200, response.text
    body = json.loads(response.content)
    assert body["name"] == repository
    return response, body["tags"]


def test_tags_list(registry, content):
    response, tags = tags_page(registry)
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    assert sorted(tags) == TAGS


# Distribution 2.8 lists tags in storage order: mirror only.
@pytest.mark.parametrize("registry", MIRROR_ONLY, indirect=True)
def test_tags_list_in_lexical_order(registry, content):
    _, tags = tags_page(registry)
    assert tags == TAGS


# Distribution 2.8 ignores `n` and `last` (it always answers every tag): mirror only.
@pytest.mark.parametrize("registry", MIRROR_ONLY, indirect=True)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_tags_pagination(registry, content, n):
    response, tags = tags_page(registry, f"?n={n}")
    pages = [tags]
    while (link := next_link(response)) is not None:
        assert len(pages) <= len(TAGS), "the Link headers go round in circles"
        response = registry.request("GET", link, REPOSITORY)
        assert response.status_code == 200
        pages.append(json.loads(response.content)["tags"])
    assert [tag for page in pages for tag in page] == TAGS
    assert all(len(page) == n for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= n


@pytest.mark.parametrize("registry", MIRROR_ONLY, indirect=True)
def test_tags_pagination_edges(registry, content):
    response, tags = tags_page(registry, f"?n={len(TAGS)}")
    assert tags == TAGS and next_link(response) is None
    response, tags = tags_page(registry, f"?n={len(TAGS) + 10}")
    assert tags == TAGS and next_link(response) is None
    response, tags = tags_page(registry, "?last=multi")
    assert tags == TAGS[TAGS.index("multi") + 1 :] and next_link(response) is None
    response, tags = tags_page(registry, "?n=2&last=multi")
    assert tags == ["v1", "v1.1"] and next_link(response) is not None
    response, tags = tags_page(registry, f"?n=2&last={TAGS[-1]}")
    assert tags == [] and next_link(response) is None


def test_tags_of_missing_repository(registry, content):
    response = registry.request("GET", f"/v2/{MISSING_REPOSITORY}/tags/list", MISSING_REPOSITORY)
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]


# Distribution 2.8 has no referrers API (404 page not found): mirror only.
@pytest.mark.parametrize("registry", MIRROR_ONLY, indirect=True)
@pytest.mark.parametrize("query", ["", "?artifactType=application/vnd.example.sbom"])
def test_referrers_is_an_image_index(registry, content, query):
    for subject in (content.image.digest, content.index.digest, ZERO_DIGEST):
        response = registry.request("GET", f"/v2/{REPOSITORY}/referrers/{subject}{query}", REPOSITORY)
        # A registry that supports referrers answers 200 even for a subject it does not have.
        assert response.status_code == 200, subject
        assert response.headers["Content-Type"] == OCI_INDEX
        index = json.loads(response.content)
        assert index["schemaVersion"] == 2
        assert index["mediaType"] == OCI_INDEX
        assert isinstance(index["manifests"], list)
        if query and "artifactType" in response.headers.get("OCI-Filters-Applied", ""):
            assert all(m.get("artifactType") == "application/vnd.example.sbom" for m in index["manifests"])
        for descriptor in index["manifests"]:
            assert {"mediaType", "digest", "size"} <= set(descriptor)


@pytest.mark.parametrize("registry", MIRROR_ONLY, indirect=True)
def test_referrers_of_a_malformed_digest(registry, content):
    response = registry.request("GET", f"/v2/{REPOSITORY}/referrers/sha256:xyz", REPOSITORY)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
