import hashlib
import json

import pytest

from registry import oci


@pytest.mark.parametrize(
    "name",
    ["alpine", "library/alpine", "a/b/c", "my-org/my.image", "a__b/c-d", "x0/y1", "a" * 255],
)
def test_valid_names(name):
    assert oci.validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Alpine", "../etc", "a/../b", "a//b", "/a", "a/", "a..b", "-a", "a-", "a b", "a%2fb", "a" * 256, "a/.", "é"],
)
def test_invalid_names(name):
    with pytest.raises(oci.NameInvalid) as raised:
        oci.validate_name(name)
    assert raised.value.status == 400
    assert json.loads(raised.value.as_json())["errors"][0]["code"] == "NAME_INVALID"


@pytest.mark.parametrize("tag", ["latest", "1.2.3", "v1_2-rc.1", "_x", "A" * 128])
def test_valid_tags(tag):
    assert oci.parse_reference(tag).tag == tag


@pytest.mark.parametrize("tag", [".hidden", "-x", "A" * 129, "a/b", "a b", ""])
def test_invalid_tags(tag):
    with pytest.raises(oci.TagInvalid):
        oci.parse_reference(tag)


def test_digest_round_trip_and_verification():
    content = b"hello"
    value = "sha256:" + hashlib.sha256(content).hexdigest()
    digest = oci.parse_digest(value)
    assert str(digest) == value
    assert digest.matches(content)
    assert not digest.matches(b"hellO")
    assert oci.parse_reference(value).digest == digest
    sha512 = oci.parse_digest("sha512:" + hashlib.sha512(content).hexdigest())
    assert sha512.matches(content)


@pytest.mark.parametrize(
    "value",
    [
        "sha256:abc",
        "sha256:" + "g" * 64,
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
        "sha256:" + "a" * 63 + "/",
        "sha256:../../" + "a" * 58,
        "sha256" + "a" * 64,
        "sha512:" + "a" * 64,
    ],
)
def test_invalid_digests(value):
    with pytest.raises(oci.DigestInvalid) as raised:
        oci.parse_digest(value)
    assert raised.value.status == 400


def test_error_json_has_code_message_and_detail():
    body = json.loads(oci.BlobUnknown("blob unknown", {"digest": "sha256:x"}).as_json())
    assert body == {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown", "detail": {"digest": "sha256:x"}}]}


def test_manifest_references_of_image_and_index():
    image = json.dumps(
        {
            "config": {"digest": "sha256:" + "1" * 64},
            "layers": [{"digest": "sha256:" + "2" * 64}, {"digest": "not-a-digest"}],
        }
    ).encode()
    assert oci.ManifestDocument.parse(image).references() == (["sha256:" + "1" * 64, "sha256:" + "2" * 64], [])
    index = json.dumps({"manifests": [{"digest": "sha256:" + "3" * 64}]}).encode()
    assert oci.ManifestDocument.parse(index).references() == ([], ["sha256:" + "3" * 64])
    assert oci.ManifestDocument.parse(b"not json").references() == ([], [])


def test_manifest_media_type_prefers_header_then_document():
    doc = json.dumps({"mediaType": oci.DOCKER_MANIFEST_LIST, "manifests": []}).encode()
    assert oci.ManifestDocument.parse(doc).media_type(oci.OCI_INDEX + "; charset=utf-8") == oci.OCI_INDEX
    assert oci.ManifestDocument.parse(doc).media_type("application/json") == oci.DOCKER_MANIFEST_LIST
    assert oci.ManifestDocument.parse(b'{"manifests": []}').media_type(None) == oci.OCI_INDEX
    assert oci.ManifestDocument.parse(b'{"layers": []}').media_type(None) == oci.OCI_MANIFEST


@pytest.mark.parametrize(
    "media_type",
    ["text/html", "image/svg+xml", "application/vnd.oci.image.manifest.v1+json\r\nX-Injected: 1", "a" * 5000, 7],
)
def test_a_manifest_declaring_anything_but_a_manifest_type_is_invalid(media_type):
    doc = json.dumps({"schemaVersion": 2, "mediaType": media_type, "layers": []}).encode()
    for header in (None, "application/json", oci.OCI_MANIFEST):
        with pytest.raises(oci.ManifestInvalid) as refused:
            oci.ManifestDocument.parse(doc).media_type(header)
        assert refused.value.status == 502


def test_a_manifest_sent_as_anything_but_a_manifest_type_is_invalid():
    doc = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    for header in (
        "text/html",
        "image/svg+xml; charset=utf-8",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ):
        with pytest.raises(oci.ManifestInvalid):
            oci.ManifestDocument.parse(doc).media_type(header)
    for body in (b"<html><script>alert(1)</script></html>", b"[]", b'"text"'):
        with pytest.raises(oci.ManifestInvalid):
            oci.ManifestDocument.parse(body).media_type(oci.OCI_MANIFEST)
