"""The cache's record of an upstream repository, and its claim to blobs: a link
(RepositoryBlob) says the upstream has shown that the repository has the blob (a manifest of
it lists the blob, or it answered a HEAD or GET of it). Manifests make links when they are
stored; blobs read them to decide who may be served what (blobs.py)."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from registry.models import Repository, RepositoryBlob, Upstream


def repository_record(upstream: Upstream, repo_name: str) -> Repository:
    """The repository's row, made on first use."""
    try:
        with transaction.atomic():
            return Repository.objects.get_or_create(upstream=upstream, name=repo_name)[0]
    except IntegrityError:  # created concurrently
        return Repository.objects.get(upstream=upstream, name=repo_name)


def link_blobs(repository: Repository, digests: list[str]) -> None:
    RepositoryBlob.objects.bulk_create(
        [RepositoryBlob(repository=repository, digest=d) for d in digests], ignore_conflicts=True
    )
