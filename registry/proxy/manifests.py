"""Manifests, pulled through: resolve a tag, get a manifest, store it.

Plain Python over the models and the upstream client; it knows nothing of HTTP requests, so
the views, the jobs and the tests all call the same functions with a route (the upstream, and
the repository as the client named it: `routing.Route`). Distribution's
registry/proxy/proxymanifeststore.go is the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from registry import oci, signals
from registry.memory import AnswerMemory
from registry.models import Manifest, ManifestReference, Repository, Tag, Upstream
from registry.proxy import pulltimes
from registry.proxy.repositories import link_blobs, repository_record
from registry.proxy.upstream_calls import STALE_SERVABLE, single_flight, upstream_client
from registry.upstreams.client import UpstreamResponse
from registry.upstreams.routing import Route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestResult:
    digest: str
    media_type: str
    content: bytes
    # Set when the upstream could not confirm the tag and the cached digest was served anyway.
    stale_reason: str | None = None
    # The parse of the fill that stored it, handed on; None for an answer from the cache.
    parsed: oci.ManifestDocument | None = field(default=None, repr=False, compare=False)

    @property
    def document(self) -> oci.ManifestDocument:
        """The manifest's JSON: the fill's own parse, else parsed now (keep it, do not ask twice)."""
        return self.parsed if self.parsed is not None else oci.ManifestDocument.parse(self.content)


def get_manifest(route: Route, reference: oci.Reference) -> ManifestResult:
    """The manifest a client asked for, from cache when it may be, else from the upstream."""
    upstream, repo_name = route.upstream, route.repository
    signals.target(upstream, repo_name)
    if reference.digest is not None:
        return _manifest_by_digest(upstream, repo_name, reference.digest)
    return _manifest_by_tag(upstream, repo_name, reference.tag)


def upstream_digest(value: str) -> oci.Digest:
    """A digest the upstream sent (Docker-Content-Digest): one that is malformed is the
    upstream's fault, a 502, never the client's 400 DIGEST_INVALID."""
    try:
        return oci.parse_digest(value)
    except oci.DigestInvalid:
        raise oci.ManifestInvalid("upstream sent a malformed digest", {"digest": value[:200]}) from None


@dataclass(frozen=True)
class _HotManifest:
    """What a remembered answer needs: the bytes, and what to mark as pulled."""

    result: ManifestResult
    pulled: tuple[tuple[type, int], ...]


_memory: AnswerMemory[_HotManifest] = AnswerMemory(settings.MIRROR_MANIFEST_MEMORY_BYTES)
MANIFEST_MEMORY_SECONDS = 300.0


def _remember(key: tuple, result: ManifestResult, pulled: tuple, ttl: float) -> None:
    # The bytes only: the memory is bounded by their size, and a parse is several times that.
    _memory.put(key, _HotManifest(replace(result, parsed=None), pulled), len(result.content), ttl=ttl)


def _remembered(key: tuple) -> ManifestResult | None:
    hot = _memory.get(key)
    if hot is None:
        return None
    for model, pk in hot.pulled:
        pulltimes.record(model, "pk", pk)
    return hot.result


def _manifest_by_digest(upstream: Upstream, repo_name: str, digest: oci.Digest) -> ManifestResult:
    key = ("digest", upstream.pk, repo_name, str(digest))
    remembered = _remembered(key)
    if remembered is not None:
        return remembered
    cached = _cached_manifest(upstream, repo_name, digest)
    if cached is None:
        with single_flight(f"manifest:{upstream.pk}:{repo_name}@{digest}"):
            cached = _cached_manifest(upstream, repo_name, digest)  # fetched while we waited?
            if cached is None:
                response = upstream_client(upstream).get_manifest(repo_name, str(digest))
                signals.upstream_used(upstream, repo_name, signals.MANIFEST, len(response.content))
                if not digest.matches(response.content):
                    logger.error("upstream manifest %s@%s does not match its digest", repo_name, digest)
                    raise oci.ManifestInvalid("upstream manifest does not match its digest", {"digest": str(digest)})
                manifest, document = _store_manifest(upstream, repo_name, str(digest), response)
                return ManifestResult(manifest.digest, manifest.media_type, response.content, parsed=document)
    result = ManifestResult(cached.digest, cached.media_type, bytes(cached.content))
    pulled = ((Repository, cached.repository_id), (Manifest, cached.pk))
    for model, pk in pulled:
        pulltimes.record(model, "pk", pk)
    # Immutable, but garbage collection may evict it: remember it only for a while.
    _remember(key, result, pulled, ttl=MANIFEST_MEMORY_SECONDS)
    return result


def _cached_manifest(upstream: Upstream, repo_name: str, digest: oci.Digest) -> Manifest | None:
    return Manifest.objects.filter(
        repository__upstream=upstream, repository__name=repo_name, digest=str(digest)
    ).first()


def _cached_tag(upstream: Upstream, repo_name: str, tag_name: str) -> Tag | None:
    return (
        Tag.objects.select_related("manifest", "repository")
        .filter(repository__upstream=upstream, repository__name=repo_name, name=tag_name)
        .first()
    )


def _is_fresh(upstream: Upstream, tag: Tag | None) -> bool:
    return tag is not None and timezone.now() - tag.validated_at < timedelta(seconds=upstream.tag_ttl_seconds())


def _manifest_by_tag(upstream: Upstream, repo_name: str, tag_name: str) -> ManifestResult:
    remembered = _remembered(("tag", upstream.pk, repo_name, tag_name))
    if remembered is not None:
        return remembered
    tag = _cached_tag(upstream, repo_name, tag_name)
    if _is_fresh(upstream, tag):
        return _serve_tag(upstream, tag)
    with single_flight(f"tag:{upstream.pk}:{repo_name}:{tag_name}"):
        tag = _cached_tag(upstream, repo_name, tag_name)  # fetched or revalidated while we waited?
        if _is_fresh(upstream, tag):
            return _serve_tag(upstream, tag)
        if tag is None:
            manifest, document = _fetch_tag(upstream, repo_name, tag_name)
            return _serve_tag(upstream, _point_tag(manifest.repository, tag_name, manifest), document)
        return _revalidate_tag(upstream, repo_name, tag)


def _revalidate_tag(upstream: Upstream, repo_name: str, tag: Tag) -> ManifestResult:
    """Ask the upstream (HEAD) whether an expired tag moved, and follow it if so."""
    now = timezone.now()
    tag_name = tag.name
    # Revalidate with a HEAD: Docker Hub does not count it as a pull. A failed HEAD is never
    # retried as a GET; the cached digest is served stale instead.
    client = upstream_client(upstream)
    try:
        head = client.head_manifest(repo_name, tag_name)
    except STALE_SERVABLE as error:
        if not upstream.serves_stale or now - tag.validated_at > timedelta(seconds=upstream.max_staleness_seconds()):
            raise
        logger.warning("serving %s:%s stale: %s", repo_name, tag_name, error.message)
        result = _serve_tag(upstream, tag)
        return ManifestResult(result.digest, result.media_type, result.content, stale_reason=error.message)

    if head.digest == tag.manifest.digest:
        Tag.objects.filter(pk=tag.pk).update(validated_at=now)
        tag.validated_at = now
        return _serve_tag(upstream, tag)
    try:
        if head.digest:
            result = _manifest_by_digest(upstream, repo_name, upstream_digest(head.digest))
            manifest = Manifest.objects.get(repository=tag.repository, digest=result.digest)
            document = result.parsed
        else:  # an upstream that does not say the digest on HEAD: fetch by tag
            manifest, document = _fetch_tag(upstream, repo_name, tag_name)
    except STALE_SERVABLE as error:  # the tag moved but the new manifest cannot be had now
        if not upstream.serves_stale:
            raise
        logger.warning("serving %s:%s stale: %s", repo_name, tag_name, error.message)
        result = _serve_tag(upstream, tag)
        return ManifestResult(result.digest, result.media_type, result.content, stale_reason=error.message)
    return _serve_tag(upstream, _point_tag(tag.repository, tag_name, manifest), document)


def _fetch_tag(upstream: Upstream, repo_name: str, tag_name: str) -> tuple[Manifest, oci.ManifestDocument]:
    response = upstream_client(upstream).get_manifest(repo_name, tag_name)
    signals.upstream_used(upstream, repo_name, signals.MANIFEST, len(response.content))
    digest = oci.sha256_digest(response.content)
    if response.digest and response.digest != str(digest):
        declared = upstream_digest(response.digest)
        if not declared.matches(response.content):
            logger.error("upstream manifest %s:%s does not match %s", repo_name, tag_name, response.digest)
            raise oci.ManifestInvalid("upstream manifest does not match its digest", {"digest": response.digest})
        digest = declared
    return _store_manifest(upstream, repo_name, str(digest), response)


def _serve_tag(upstream: Upstream, tag: Tag, document: oci.ManifestDocument | None = None) -> ManifestResult:
    """A tag's manifest; remembered in this process for what is left of the tag's TTL.
    `document`: the parse of the fill that just stored it, if it was."""
    pulled = ((Repository, tag.repository_id), (Tag, tag.pk), (Manifest, tag.manifest_id))
    for model, pk in pulled:
        pulltimes.record(model, "pk", pk)
    manifest = tag.manifest
    result = ManifestResult(manifest.digest, manifest.media_type, bytes(manifest.content), parsed=document)
    remaining = upstream.tag_ttl_seconds() - (timezone.now() - tag.validated_at).total_seconds()
    _remember(("tag", tag.repository.upstream_id, tag.repository.name, tag.name), result, pulled, ttl=remaining)
    return result


def _point_tag(repository: Repository, tag_name: str, manifest: Manifest) -> Tag:
    tag, _ = Tag.objects.update_or_create(
        repository=repository, name=tag_name, defaults={"manifest": manifest, "validated_at": timezone.now()}
    )
    tag.manifest = manifest
    return tag


def _store_manifest(
    upstream: Upstream, repo_name: str, digest: str, response: UpstreamResponse
) -> tuple[Manifest, oci.ManifestDocument]:
    """Keep a verified manifest, what it references, and the repository's claim to its blobs.
    Anything but a registry manifest is refused (MANIFEST_INVALID) before anything is stored.
    The manifest's JSON is parsed here, once, and handed back with it."""
    document = oci.ManifestDocument.parse(response.content)
    media_type = document.media_type(response.headers.get("Content-Type"))
    repository = repository_record(upstream, repo_name)
    blobs, children = document.references()
    try:
        with transaction.atomic():
            manifest, created = Manifest.objects.get_or_create(
                repository=repository,
                digest=digest,
                defaults={"media_type": media_type, "content": response.content, "size": len(response.content)},
            )
            if created:
                # A size that is not a non-negative integer is left out (the fill is then
                # capped by MIRROR_BLOB_MAX_BYTES).
                sizes = document.descriptor_sizes()
                ManifestReference.objects.bulk_create(
                    [
                        ManifestReference(
                            manifest=manifest, digest=d, kind=ManifestReference.Kind.BLOB, size=sizes.get(d)
                        )
                        for d in blobs
                    ]
                    + [
                        ManifestReference(manifest=manifest, digest=d, kind=ManifestReference.Kind.MANIFEST)
                        for d in children
                    ],
                    ignore_conflicts=True,
                )
                link_blobs(repository, blobs)
    except IntegrityError:
        manifest = Manifest.objects.get(repository=repository, digest=digest)
    manifest.repository = repository
    return manifest, document
