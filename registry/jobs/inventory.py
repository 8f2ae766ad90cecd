"""What the cache holds, as garbage collection sees it: images, the blobs they use, and when
each was last used.

An image is a manifest no other cached manifest of its repository points at (a root: what a
tag points at, or a manifest pulled by digest) together with the child manifests it points
at. Its last use is the latest pull or caching of any of its manifests.
A manifest shared by two images belongs to both.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from registry import oci
from registry.jobs import pins
from registry.models import Blob, Manifest, ManifestReference, Repository, Tag
from registry.storage.blobstore import BlobStore


@dataclass
class Image:
    root: int  # manifest pk
    name: str  # repository@digest
    members: list[int]  # manifest pks, the root first
    tags: list[str]
    last_used: datetime
    pinned: bool

    def describe(self) -> str:
        tags = f" (tags: {', '.join(sorted(self.tags))})" if self.tags else ""
        return f"{self.name}{tags}"


@dataclass
class StoredBlob:
    digest: str
    size: int | None  # of the file in the store; None when only the row is left
    last_used: datetime


@dataclass
class Inventory:
    images: list[Image]
    blobs: dict[str, StoredBlob]
    # manifest pk → the blob digests it references
    blobs_of: dict[int, list[str]]
    # blob digest → how many cached manifests (any repository, any upstream) reference it
    references: dict[str, int]
    # manifest pk → how many images contain it
    image_count: dict[int, int]
    repository_of: dict[int, int] = field(default_factory=dict)  # manifest pk → repository pk
    repositories: dict[int, Repository] = field(default_factory=dict)

    @property
    def store_bytes(self) -> int:
        return sum(blob.size or 0 for blob in self.blobs.values())


def take(store: BlobStore) -> Inventory:
    manifests = {
        pk: (repository_id, digest, _last_use(created_at, last_pulled_at))
        for pk, repository_id, digest, created_at, last_pulled_at in Manifest.objects.values_list(
            "pk", "repository_id", "digest", "created_at", "last_pulled_at"
        )
    }
    by_name = {(repository_id, digest): pk for pk, (repository_id, digest, _) in manifests.items()}
    children: dict[int, list[int]] = defaultdict(list)
    blobs_of: dict[int, list[str]] = defaultdict(list)
    references: dict[str, int] = defaultdict(int)
    for manifest_id, digest, kind in ManifestReference.objects.values_list("manifest_id", "digest", "kind"):
        if kind == ManifestReference.Kind.BLOB:
            blobs_of[manifest_id].append(digest)
            references[digest] += 1  # a manifest cached since the query above counts too
        elif manifest_id in manifests:
            child = by_name.get((manifests[manifest_id][0], digest))
            if child is not None and child != manifest_id:
                children[manifest_id].append(child)
    has_parent = {child for kids in children.values() for child in kids}

    tags_of: dict[int, list[str]] = defaultdict(list)
    for manifest_id, name in Tag.objects.values_list("manifest_id", "name"):
        tags_of[manifest_id].append(name)
    repositories = Repository.objects.in_bulk()
    pinned = pins.pinned_manifest_ids()

    images, image_count = [], defaultdict(int)
    for root in sorted(pk for pk in manifests if pk not in has_parent):
        members = _descendants(root, children)
        for member in members:
            image_count[member] += 1
        repository_id, digest, _ = manifests[root]
        images.append(
            Image(
                root=root,
                name=f"{repositories[repository_id].name}@{digest}",
                members=members,
                tags=[tag for member in members for tag in tags_of[member]],
                last_used=max(manifests[member][2] for member in members),
                pinned=any(member in pinned for member in members),
            )
        )

    blobs = {}
    stored = store.stored_sizes()  # one listing, rather than a question per blob
    for digest, created_at, last_pulled_at in Blob.objects.values_list("digest", "created_at", "last_pulled_at"):
        try:
            oci.parse_digest(digest)
        except oci.DigestInvalid:
            continue
        blobs[digest] = StoredBlob(digest, stored.get(digest), _last_use(created_at, last_pulled_at))
    return Inventory(
        images=images,
        blobs=blobs,
        blobs_of=dict(blobs_of),
        references=dict(references),
        image_count=dict(image_count),
        repository_of={pk: value[0] for pk, value in manifests.items()},
        repositories=repositories,
    )


def _last_use(created_at: datetime, last_pulled_at: datetime | None) -> datetime:
    """Written or pulled, whichever is later."""
    return max(created_at, last_pulled_at) if last_pulled_at else created_at


def _descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    members, stack = [], [root]
    while stack:
        pk = stack.pop()
        if pk in members:
            continue
        members.append(pk)
        stack.extend(children.get(pk, ()))
    return members
