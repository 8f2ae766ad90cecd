"""Pins: images garbage collection never evicts, whatever their age or the store's size."""

from __future__ import annotations

from django.db.models import Q

from registry.jobs.imageref import ImageRef
from registry.models import Manifest, Pin, Tag


def pin(image: ImageRef, *, whole_repository: bool = False, created_by: str = "", note: str = "") -> Pin:
    pin, _ = Pin.objects.get_or_create(
        upstream=image.upstream,
        repository=image.repository,
        reference="" if whole_repository else str(image.reference),
        defaults={"created_by": created_by[:150], "note": note[:255]},
    )
    return pin


def unpin(image: ImageRef, *, whole_repository: bool = False) -> bool:
    deleted, _ = Pin.objects.filter(
        upstream=image.upstream, repository=image.repository, reference="" if whole_repository else str(image.reference)
    ).delete()
    return bool(deleted)


def pinned_manifest_ids() -> set[int]:
    """The manifests pins protect now: a pinned tag protects what it points at."""
    tags, digests, repositories = Q(pk__in=[]), Q(pk__in=[]), Q(pk__in=[])
    for pin in Pin.objects.all():
        where = Q(repository__upstream_id=pin.upstream_id, repository__name=pin.repository)
        if not pin.reference:
            repositories |= where
        elif ":" in pin.reference:
            digests |= where & Q(digest=pin.reference)
        else:
            tags |= where & Q(name=pin.reference)
    ids = set(Manifest.objects.filter(repositories | digests).values_list("pk", flat=True))
    return ids | set(Tag.objects.filter(tags).values_list("manifest_id", flat=True))
