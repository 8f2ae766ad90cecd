"""Build a cache's state directly (rows and blob files, as pulls leave them) for the
garbage-collection tests: any shape of images, shared blobs and ages, without an upstream."""

from __future__ import annotations

from datetime import timedelta
import json

from django.utils import timezone

from registry import oci
from registry.models import Blob, Manifest, ManifestReference, Repository, RepositoryBlob, Tag, Upstream
from registry.storage.blobstore import BlobStore


def store_blob(store: BlobStore, data: bytes, *, days_ago: float = 10) -> str:
    digest = oci.sha256_digest(data)
    if store.size(digest) is None:
        fill = store.begin_fill(digest, len(data))
        fill.write(data)
        fill.commit()
    Blob.objects.get_or_create(digest=str(digest), defaults={"size": len(data)})
    when = timezone.now() - timedelta(days=days_ago)
    Blob.objects.filter(digest=str(digest)).update(created_at=when, last_pulled_at=when)
    return str(digest)


def cache_manifest(
    upstream: Upstream, repository: str, document: dict, *, tag: str | None = None, days_ago: float = 10
) -> Manifest:
    repo, _ = Repository.objects.get_or_create(upstream=upstream, name=repository)
    content = json.dumps(document, indent=2).encode()
    manifest = Manifest.objects.create(
        repository=repo,
        digest=str(oci.sha256_digest(content)),
        media_type=document["mediaType"],
        content=content,
        size=len(content),
    )
    blobs, children = oci.ManifestDocument.parse(content).references()
    ManifestReference.objects.bulk_create(
        [ManifestReference(manifest=manifest, digest=d, kind="blob") for d in blobs]
        + [ManifestReference(manifest=manifest, digest=d, kind="manifest") for d in children]
    )
    RepositoryBlob.objects.bulk_create(
        [RepositoryBlob(repository=repo, digest=d) for d in blobs], ignore_conflicts=True
    )
    if tag:
        Tag.objects.create(repository=repo, name=tag, manifest=manifest, validated_at=timezone.now())
    age(manifest, days_ago)
    return manifest


def cache_image(
    store: BlobStore, upstream: Upstream, repository: str, tag: str | None, layers: list[bytes], *, days_ago: float = 10
) -> Manifest:
    """A single-platform image: a config blob and the given layers, all stored."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "repository": repository, "layers": len(layers)}
    ).encode()
    descriptors = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "size": len(data),
            "digest": store_blob(store, data, days_ago=days_ago),
        }
        for data in layers
    ]
    document = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": store_blob(store, config, days_ago=days_ago),
        },
        "layers": descriptors,
    }
    return cache_manifest(upstream, repository, document, tag=tag, days_ago=days_ago)


def cache_index(
    upstream: Upstream, repository: str, tag: str, children: dict[str, Manifest], *, days_ago: float = 10
) -> Manifest:
    """An index over cached child manifests, keyed by platform ("linux/amd64")."""
    document = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            {
                "mediaType": child.media_type,
                "size": child.size,
                "digest": child.digest,
                "platform": dict(zip(("os", "architecture"), platform.split("/"), strict=True)),
            }
            for platform, child in children.items()
        ],
    }
    return cache_manifest(upstream, repository, document, tag=tag, days_ago=days_ago)


def age(manifest: Manifest, days_ago: float, *, blobs: bool = True) -> None:
    """Make an image (its manifest, tags and, by default, blobs) last used `days_ago`."""
    when = timezone.now() - timedelta(days=days_ago)
    Manifest.objects.filter(pk=manifest.pk).update(created_at=when, last_pulled_at=when)
    Tag.objects.filter(manifest=manifest).update(last_pulled_at=when)
    if blobs:
        digests = ManifestReference.objects.filter(manifest=manifest, kind="blob").values_list("digest", flat=True)
        Blob.objects.filter(digest__in=list(digests)).update(created_at=when, last_pulled_at=when)
    Repository.objects.filter(pk=manifest.repository_id).update(created_at=when, last_pulled_at=when)


def blob_digests(manifest: Manifest) -> list[str]:
    return list(ManifestReference.objects.filter(manifest=manifest, kind="blob").values_list("digest", flat=True))


def count_manifest_parses(monkeypatch) -> list[bytes]:
    """The manifests parsed from now on (oci.ManifestDocument.parse), in order."""
    parsed: list[bytes] = []
    parse = oci.ManifestDocument.parse

    def counted(content: bytes) -> oci.ManifestDocument:
        parsed.append(content)
        return parse(content)

    monkeypatch.setattr(oci.ManifestDocument, "parse", staticmethod(counted))
    return parsed
