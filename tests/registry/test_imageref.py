"""Image references and platforms as staff type them."""

from __future__ import annotations

import pytest

from registry import oci
from registry.jobs.imageref import ImageRefInvalid, Platform, parse_image, parse_platforms, platform_of
from registry.models import Upstream

pytestmark = pytest.mark.django_db
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def hub(settings) -> Upstream:
    settings.REGISTRY_PROXY_REMOTEURL = "https://registry-1.docker.io"
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "auto"
    return Upstream.objects.default()


@pytest.mark.parametrize(
    "text,repository,reference",
    [
        ("postgres", "library/postgres", "latest"),
        ("postgres:17", "library/postgres", "17"),
        ("library/postgres:17", "library/postgres", "17"),
        ("bitnami/postgresql:17.2.0", "bitnami/postgresql", "17.2.0"),
        (f"postgres@{DIGEST}", "library/postgres", DIGEST),
        ("docker.io/library/postgres:17", "library/postgres", "17"),
        ("registry-1.docker.io/postgres", "library/postgres", "latest"),
    ],
)
def test_references_resolve_to_the_upstreams_names(hub, text, repository, reference):
    image = parse_image(text)
    assert (image.upstream, image.repository, str(image.reference)) == (hub, repository, reference)
    assert str(image) == f"{repository}{'@' if reference == DIGEST else ':'}{reference}"


def test_a_registry_host_selects_its_upstream(hub):
    other = Upstream.objects.create(name="local", url="http://127.0.0.1:5001", library_prefix=False)
    image = parse_image("127.0.0.1:5001/team/app:2")
    assert (image.upstream, image.repository, image.reference) == (other, "team/app", oci.Reference(tag="2"))
    with pytest.raises(ImageRefInvalid, match="ghcr.io is not a configured upstream"):
        parse_image("ghcr.io/team/app:1")


@pytest.mark.parametrize("text", ["Postgres:17", "postgres:-bad", "postgres@sha256:xyz", ""])
def test_invalid_references_are_refused(hub, text):
    with pytest.raises(ImageRefInvalid):
        parse_image(text)


def test_platforms_parse_and_match_index_entries():
    assert parse_platforms(["linux/amd64,linux/arm64/v8", " linux/arm/v7 "]) == [
        Platform("linux", "amd64"),
        Platform("linux", "arm64", "v8"),
        Platform("linux", "arm", "v7"),
    ]
    assert parse_platforms([""]) == []
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(ImageRefInvalid):
            parse_platforms([bad])
    arm64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    assert Platform("linux", "arm64").matches(arm64), "no variant asked: any variant"
    assert Platform("linux", "arm64", "v8").matches(arm64)
    assert not Platform("linux", "arm64", "v9").matches(arm64)
    assert not Platform("linux", "amd64").matches(arm64)
    assert not Platform("linux", "amd64").matches(None)


def test_index_entries_and_their_platforms():
    index = (
        b'{"schemaVersion": 2, "manifests": [{"digest": "%s", "platform": {"os": "linux", "architecture": "arm64"}},'
        b' {"digest": "not-a-digest"}, {"digest": "%s", "platform": {"os": "unknown"}}]}'
        % (DIGEST.encode(), DIGEST.replace("a", "b").encode())
    )
    entries = oci.ManifestDocument.parse(index).index_entries()
    assert [e["digest"] for e in entries] == [DIGEST, DIGEST.replace("a", "b")]
    assert [platform_of(e) for e in entries] == [Platform("linux", "arm64"), None]
    assert oci.ManifestDocument.parse(b'{"schemaVersion": 2, "layers": []}').index_entries() is None
