"""The pull-through logic: resolve a tag, get a manifest, fetch a blob.

Plain Python over the models, the blob store and the upstream client; it knows nothing of
HTTP requests, so the views, the Celery tasks and the tests all call the same functions.
Names given to these functions are as clients send them; `Upstream.upstream_name` maps them
to the upstream's own (`alpine` → `library/alpine` on Docker Hub).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
import json
import logging
import time

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from registry import oci, signals
from registry.memory import AnswerMemory
from registry.models import Blob, Manifest, ManifestReference, Repository, RepositoryBlob, Tag, Upstream
from registry.proxy import pulltimes
from registry.proxy.fills import BlobFills, UpstreamDigestMismatch
from registry.storage import locks
from registry.storage.blobstore import BlobLocation, BlobStore, default_store
from registry.upstreams import failover
from registry.upstreams.client import BlobDownload, CredentialsRejected, UpstreamUnavailable
from registry.upstreams.failover import FailoverClient

logger = logging.getLogger(__name__)

# Upstream failures after which a cached tag is served stale rather than failing the pull
# (the upstream's stale policy permitting): the upstream down, rate-limiting, or refusing every
# account of the mirror.
STALE_SERVABLE = (UpstreamUnavailable, oci.TooManyRequests, CredentialsRejected)


@dataclass(frozen=True)
class ManifestResult:
    digest: str
    media_type: str
    content: bytes
    # Set when the upstream could not confirm the tag and the cached digest was served anyway.
    stale_reason: str | None = None


@dataclass(frozen=True)
class CachedBlob:
    """A committed blob: serve it from the store."""

    size: int
    location: BlobLocation  # how the store has it served


@dataclass
class FillingBlob:
    """A miss: the bytes stream to the client as they are written and verified."""

    size: int | None
    chunks: Iterator[bytes] = field(repr=False)


@dataclass(frozen=True)
class TagPage:
    tags: list[str]
    next_last: str | None  # set when there is a further page
    stale: bool = False


# --- upstream clients ------------------------------------------------------------------------
def upstream_client(upstream: Upstream) -> FailoverClient:
    """The process-wide client of an upstream, over its accounts (failover.py); it caches
    tokens and connections."""
    return failover.client_for(upstream)


def repository_name(upstream: Upstream, name: str) -> str:
    """The repository as the upstream knows it, once the name is valid and the upstream's
    allow and deny patterns let the mirror pull it."""
    repo_name = upstream.upstream_name(oci.validate_name(name))
    if not upstream.allows(repo_name):
        raise oci.Denied("this mirror does not serve that repository from this upstream", {"name": name})
    return repo_name


# --- manifests -------------------------------------------------------------------------------
def get_manifest(upstream: Upstream, name: str, reference: oci.Reference) -> ManifestResult:
    """The manifest a client asked for, from cache when it may be, else from the upstream."""
    repo_name = repository_name(upstream, name)
    signals.target(upstream, repo_name)
    if reference.digest is not None:
        return _manifest_by_digest(upstream, repo_name, reference.digest)
    return _manifest_by_tag(upstream, repo_name, reference.tag)


@dataclass(frozen=True)
class _HotManifest:
    """What a remembered answer needs: the bytes, and what to mark as pulled."""

    result: ManifestResult
    pulled: tuple[tuple[type, int], ...]


_memory: AnswerMemory[_HotManifest] = AnswerMemory(settings.MIRROR_MANIFEST_MEMORY_BYTES)
MANIFEST_MEMORY_SECONDS = 300.0


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
        with _single_flight(f"manifest:{upstream.pk}:{repo_name}@{digest}"):
            cached = _cached_manifest(upstream, repo_name, digest)  # fetched while we waited?
            if cached is None:
                response = upstream_client(upstream).get_manifest(repo_name, str(digest))
                signals.upstream_used(upstream, repo_name, signals.MANIFEST, len(response.content))
                if not digest.matches(response.content):
                    logger.error("upstream manifest %s@%s does not match its digest", repo_name, digest)
                    raise oci.ManifestInvalid("upstream manifest does not match its digest", {"digest": str(digest)})
                manifest = _store_manifest(upstream, repo_name, str(digest), response)
                return ManifestResult(manifest.digest, manifest.media_type, response.content)
    result = ManifestResult(cached.digest, cached.media_type, bytes(cached.content))
    pulled = ((Repository, cached.repository_id), (Manifest, cached.pk))
    for model, pk in pulled:
        pulltimes.record(model, "pk", pk)
    # Immutable, but garbage collection may evict it: remember it only for a while.
    _memory.put(key, _HotManifest(result, pulled), len(result.content), ttl=MANIFEST_MEMORY_SECONDS)
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


@contextmanager
def _single_flight(name: str) -> Iterator[None]:
    """Let one process at a time ask the upstream about `name`; the others wait, then find
    the answer in the cache. A pull never waits longer than one upstream round trip for it."""
    wait = settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT + settings.MIRROR_UPSTREAM_READ_TIMEOUT
    try:
        lock = locks.acquire(name, timeout=wait)
    except locks.LockTimeout:
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _manifest_by_tag(upstream: Upstream, repo_name: str, tag_name: str) -> ManifestResult:
    remembered = _remembered(("tag", upstream.pk, repo_name, tag_name))
    if remembered is not None:
        return remembered
    tag = _cached_tag(upstream, repo_name, tag_name)
    if _is_fresh(upstream, tag):
        return _serve_tag(upstream, tag)
    with _single_flight(f"tag:{upstream.pk}:{repo_name}:{tag_name}"):
        tag = _cached_tag(upstream, repo_name, tag_name)  # fetched or revalidated while we waited?
        if _is_fresh(upstream, tag):
            return _serve_tag(upstream, tag)
        if tag is None:
            manifest = _fetch_tag(upstream, repo_name, tag_name)
            return _serve_tag(upstream, _point_tag(manifest.repository, tag_name, manifest))
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
        else:  # an upstream that does not say the digest on HEAD: fetch by tag
            manifest = _fetch_tag(upstream, repo_name, tag_name)
    except STALE_SERVABLE as error:  # the tag moved but the new manifest cannot be had now
        if not upstream.serves_stale:
            raise
        logger.warning("serving %s:%s stale: %s", repo_name, tag_name, error.message)
        result = _serve_tag(upstream, tag)
        return ManifestResult(result.digest, result.media_type, result.content, stale_reason=error.message)
    return _serve_tag(upstream, _point_tag(tag.repository, tag_name, manifest))


def upstream_digest(value: str) -> oci.Digest:
    """A digest the upstream sent (Docker-Content-Digest): one that is malformed is the
    upstream's fault, a 502, never the client's 400 DIGEST_INVALID."""
    try:
        return oci.parse_digest(value)
    except oci.DigestInvalid:
        raise oci.ManifestInvalid("upstream sent a malformed digest", {"digest": value[:200]}) from None


def _fetch_tag(upstream: Upstream, repo_name: str, tag_name: str) -> Manifest:
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


def _serve_tag(upstream: Upstream, tag: Tag) -> ManifestResult:
    """A tag's manifest; remembered in this process for what is left of the tag's TTL."""
    pulled = ((Repository, tag.repository_id), (Tag, tag.pk), (Manifest, tag.manifest_id))
    for model, pk in pulled:
        pulltimes.record(model, "pk", pk)
    manifest = tag.manifest
    result = ManifestResult(manifest.digest, manifest.media_type, bytes(manifest.content))
    remaining = upstream.tag_ttl_seconds() - (timezone.now() - tag.validated_at).total_seconds()
    key = ("tag", tag.repository.upstream_id, tag.repository.name, tag.name)
    _memory.put(key, _HotManifest(result, pulled), len(result.content), ttl=remaining)
    return result


def _point_tag(repository: Repository, tag_name: str, manifest: Manifest) -> Tag:
    tag, _ = Tag.objects.update_or_create(
        repository=repository, name=tag_name, defaults={"manifest": manifest, "validated_at": timezone.now()}
    )
    tag.manifest = manifest
    return tag


def _repository(upstream: Upstream, repo_name: str) -> Repository:
    try:
        with transaction.atomic():
            return Repository.objects.get_or_create(upstream=upstream, name=repo_name)[0]
    except IntegrityError:  # created concurrently
        return Repository.objects.get(upstream=upstream, name=repo_name)


def _store_manifest(upstream: Upstream, repo_name: str, digest: str, response) -> Manifest:
    """Keep a verified manifest, what it references, and the repository's claim to its blobs.
    Anything but a registry manifest is refused (MANIFEST_INVALID) before anything is stored."""
    media_type = oci.manifest_media_type(response.content, response.headers.get("Content-Type"))
    repository = _repository(upstream, repo_name)
    blobs, children = oci.manifest_references(response.content)
    try:
        with transaction.atomic():
            manifest, created = Manifest.objects.get_or_create(
                repository=repository,
                digest=digest,
                defaults={"media_type": media_type, "content": response.content, "size": len(response.content)},
            )
            if created:
                sizes = _descriptor_sizes(response.content)
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
                _link_blobs(repository, blobs)
    except IntegrityError:
        manifest = Manifest.objects.get(repository=repository, digest=digest)
    manifest.repository = repository
    return manifest


def _descriptor_sizes(content: bytes) -> dict[str, int]:
    """digest → size of the config and layer descriptors of a (verified) manifest; a size that
    is not a non-negative integer is left out (the fill is then capped by MIRROR_BLOB_MAX_BYTES)."""
    try:
        document = json.loads(content)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    layers = document.get("layers")
    descriptors = [document.get("config")] + (layers if isinstance(layers, list) else [])
    sizes: dict[str, int] = {}
    for descriptor in descriptors:
        if not isinstance(descriptor, dict):
            continue
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if isinstance(digest, str) and type(size) is int and size >= 0:
            sizes.setdefault(digest, size)
    return sizes


def _link_blobs(repository: Repository, digests: list[str]) -> None:
    RepositoryBlob.objects.bulk_create(
        [RepositoryBlob(repository=repository, digest=d) for d in digests], ignore_conflicts=True
    )


# --- blobs -----------------------------------------------------------------------------------
# Who may have a cached blob is decided on provenance. The bytes of a blob are served under an
# upstream and repository only once that upstream has shown the blob there (a manifest of it
# lists the blob, or it answered a HEAD or GET of it). A claim is not the bytes, though: an
# upstream whose content an attacker controls can list any digest. So a blob whose bytes first
# came through a repository that was not public (Blob.origin_private) is served through a
# repository whose upstream has not delivered those bytes itself (RepositoryBlob.delivered)
# only to clients who may read the origin repository; anyone else is served only after the
# mirror has downloaded the blob from the asked upstream, for the asked repository, and found
# the same bytes (then that repository's clients are served like the origin's).


@dataclass(frozen=True)
class BlobReader:
    """What the cache must know of the client and of the upstream's visibility to serve a blob
    (access/ answers both; the cache knows nothing of requests)."""

    # May the client pull this repository (as the upstream names it)?
    may_read: Callable[[Upstream, str], bool]
    # Does the upstream serve this repository only to the mirror's account (not to anyone)?
    is_private: Callable[[Upstream, str], bool]


# No client (prefetch, tasks): nothing is served to anybody, and privacy is not known.
NO_CLIENT = BlobReader(may_read=lambda upstream, repository: True, is_private=lambda upstream, repository: True)


class UpstreamTooLarge(oci.RegistryError):
    """An upstream answer past the size the mirror accepts for it."""

    code, status = "SIZE_INVALID", 502


def stat_blob(
    upstream: Upstream, name: str, digest: oci.Digest, store: BlobStore | None = None, reader: BlobReader = NO_CLIENT
) -> int:
    """The size of a blob, for HEAD: from cache, else an upstream HEAD. Never downloads."""
    store = store or default_store()
    repo_name = repository_name(upstream, name)
    signals.target(upstream, repo_name)
    size = store.size(digest)
    link = _link_of(upstream, repo_name, digest) if size is not None else None
    if size is not None and link is not None and _readable(link, digest, reader):
        pulltimes.record(Blob, "digest", str(digest))
        return size
    head = upstream_client(upstream).head_blob(repo_name, str(digest))
    if size is not None:
        # The upstream just said this repository has the blob we already hold.
        _link_blobs(_repository(upstream, repo_name), [str(digest)])
        if _readable(_link_of(upstream, repo_name, digest), digest, reader):
            return size
        # Not ours to vouch for here: say what the upstream says, as for a blob not cached.
    signals.upstream_used(upstream, repo_name, signals.BLOB)  # not cached: answered by the upstream
    if head.content_length is None:
        raise UpstreamUnavailable("upstream did not say the blob's size")
    return head.content_length


def fetch_blob(
    upstream: Upstream, name: str, digest: oci.Digest, store: BlobStore | None = None, reader: BlobReader = NO_CLIENT
) -> CachedBlob | FillingBlob:
    """A cached blob, or the bytes of its fill as they arrive. Concurrent misses for one
    digest, in any process, share one upstream download (see fills.py)."""
    store = store or default_store()
    repo_name = repository_name(upstream, name)
    signals.target(upstream, repo_name)
    size = store.size(digest)
    if size is not None:
        _admit(upstream, repo_name, digest, size, reader)
        pulltimes.record(Blob, "digest", str(digest))
        return CachedBlob(size, store.location(digest))

    fills = BlobFills(store, settings.MIRROR_FILL_TIMEOUT)
    source = _source(upstream, repo_name)
    follower = fills.follow(
        digest,
        open_download=lambda: _open_download(upstream, repo_name, digest),
        on_commit=lambda size: _record_blob(upstream, repo_name, digest, size, reader),
        source=source,
    )
    if follower is None:  # another fill committed it just now
        return fetch_blob(upstream, name, digest, store, reader)
    if not _may_follow(follower.source, source, reader):
        # Another repository's fill, whose bytes this client may not have: wait for it to be
        # committed, then be served (or not) as a hit is.
        fills.wait_for_commit(digest)
        return fetch_blob(upstream, name, digest, store, reader)
    signals.upstream_used(upstream, repo_name, signals.BLOB)  # a miss (the fill counts the bytes)
    chunks = follower.chunks()
    # Run up to the first chunk now: a blob that fits in the held-back part is verified
    # before the response starts, so its client gets a clean error instead of a cut one.
    first = next(chunks, b"")
    return FillingBlob(follower.size, _prepend(first, chunks))


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest  # closing this generator closes the follower's


def _source(upstream: Upstream, repo_name: str) -> str:
    """What a fill records as the repository it downloads through."""
    return f"{upstream.pk}/{repo_name}"


def _may_follow(fill_source: str, own_source: str, reader: BlobReader) -> bool:
    if not fill_source or fill_source == own_source:
        return True
    upstream_pk, _, repo_name = fill_source.partition("/")
    upstream = Upstream.objects.filter(pk=int(upstream_pk)).first() if upstream_pk.isdigit() else None
    return upstream is not None and _asks(reader.may_read, upstream, repo_name, failed=False)


def _asks(question: Callable[[Upstream, str], bool], upstream: Upstream, repo_name: str, failed: bool) -> bool:
    """The answer of one of the reader's questions; `failed` when it cannot be had."""
    try:
        return bool(question(upstream, repo_name))
    except Exception as error:  # a refusal, or an upstream that could not be asked
        logger.debug("blob access question for %s failed: %s", repo_name, getattr(error, "message", error))
        return failed


def _open_download(upstream: Upstream, repo_name: str, digest: oci.Digest, size: int | None = None) -> BlobDownload:
    """The upstream GET of a blob, capped at the size the repository's manifests give it (or
    `size` when known, else MIRROR_BLOB_MAX_BYTES): a Content-Length that says otherwise is
    refused before anything is read, and bytes past the cap fail the download."""
    download = upstream_client(upstream).open_blob(repo_name, str(digest))
    exact = size if size is not None else _descriptor_size(upstream, repo_name, digest)
    if exact is not None:
        download.limit_to(exact, exact=True)
    else:
        download.limit_to(settings.MIRROR_BLOB_MAX_BYTES, exact=False)
    return download


def _descriptor_size(upstream: Upstream, repo_name: str, digest: oci.Digest) -> int | None:
    """The blob's size as a cached manifest of this repository describes it."""
    return (
        ManifestReference.objects.filter(
            manifest__repository__upstream=upstream,
            manifest__repository__name=repo_name,
            digest=str(digest),
            kind=ManifestReference.Kind.BLOB,
            size__isnull=False,
        )
        .values_list("size", flat=True)
        .first()
    )


def _admit(upstream: Upstream, repo_name: str, digest: oci.Digest, size: int, reader: BlobReader) -> None:
    """Raise unless the cached blob may be served here to this client (see above)."""
    link = _link_of(upstream, repo_name, digest)
    if link is None:
        # Held for another repository: serve it here only once the upstream confirms.
        upstream_client(upstream).head_blob(repo_name, str(digest))
        _link_blobs(_repository(upstream, repo_name), [str(digest)])
        link = _link_of(upstream, repo_name, digest)
    if not _readable(link, digest, reader):
        _prove(upstream, repo_name, digest, size, reader)


def _readable(link: RepositoryBlob | None, digest: oci.Digest, reader: BlobReader) -> bool:
    """Whether a linked blob may be served without asking its upstream for the bytes."""
    if link is None:
        return False
    # A fill that has just committed (perhaps on another replica) writes its link and the
    # blob's record right after: a blob in the store without a record is given a moment.
    deadline, pause = time.monotonic() + BOOKKEEPING_WAIT, 0.02
    while not link.delivered:
        blob = Blob.objects.select_related("origin__upstream").filter(digest=str(digest)).first()
        if blob is not None:
            if not blob.origin_private:
                return True
            return blob.origin is not None and _asks(
                reader.may_read, blob.origin.upstream, blob.origin.name, failed=False
            )
        if time.monotonic() > deadline:  # recorded nowhere (its bookkeeping failed): provenance unknown
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
        link.refresh_from_db(fields=["delivered"])
    return True


BOOKKEEPING_WAIT = 2.0  # seconds a committed blob's record may lag behind its commit


def _prove(upstream: Upstream, repo_name: str, digest: oci.Digest, size: int, reader: BlobReader) -> None:
    """Download the blob from this upstream for this repository and check the bytes against the
    digest (nothing is stored: the store has them); raise unless they match."""
    with _single_flight(f"prove:{upstream.pk}:{repo_name}@{digest}"):
        link = _link_of(upstream, repo_name, digest)
        if link is not None and link.delivered:  # proved while we waited
            return
        download = _open_download(upstream, repo_name, digest, size=size)
        hasher, received = digest.hasher(), 0
        try:
            for chunk in download.chunks():
                hasher.update(chunk)
                received += len(chunk)
        finally:
            download.close()
        signals.upstream_used(upstream, repo_name, signals.BLOB, received)
        if received != size or hasher.hexdigest() != digest.encoded:
            logger.error("upstream %s has other bytes than %s for %s", upstream.name, digest, repo_name)
            raise UpstreamDigestMismatch("upstream sent bytes that do not match the digest", {"digest": str(digest)})
        repository = _repository(upstream, repo_name)
        _link_delivered(repository, digest)
        if not _asks(reader.is_private, upstream, repo_name, failed=True):
            Blob.objects.filter(digest=str(digest), origin_private=True).update(origin=repository, origin_private=False)


def _record_blob(upstream: Upstream, repo_name: str, digest: oci.Digest, size: int, reader: BlobReader) -> None:
    """Bookkeeping after a commit; the committed file is what counts, so a database hiccup
    here is logged, not raised (the link is made again on the next pull)."""
    signals.upstream_used(upstream, repo_name, signals.BLOB, size)
    try:
        repository = _repository(upstream, repo_name)
        _link_delivered(repository, digest)  # first: what another replica waiting for this blob looks at
        private = _asks(reader.is_private, upstream, repo_name, failed=True)
        try:
            blob, created = Blob.objects.get_or_create(
                digest=str(digest), defaults={"size": size, "origin": repository, "origin_private": private}
            )
            if not created and (blob.origin_id is None or (blob.origin_private and not private)):
                # Filled again (evicted meanwhile), now through a public repository or a known one.
                Blob.objects.filter(pk=blob.pk).update(origin=repository, origin_private=private)
        except IntegrityError:
            pass
    except DatabaseError:
        logger.exception("could not record blob %s", digest)


def _link_of(upstream: Upstream, repo_name: str, digest: oci.Digest) -> RepositoryBlob | None:
    return RepositoryBlob.objects.filter(
        repository__upstream=upstream, repository__name=repo_name, digest=str(digest)
    ).first()


def _link_delivered(repository: Repository, digest: oci.Digest) -> None:
    RepositoryBlob.objects.bulk_create(
        [RepositoryBlob(repository=repository, digest=str(digest), delivered=True)],
        update_conflicts=True,
        unique_fields=["repository", "digest"],
        update_fields=["delivered"],
    )


# --- listings --------------------------------------------------------------------------------
# Tag lists are asked of the upstream at most once per MIRROR_TAG_LIST_TTL seconds, process and
# page; what is remembered is bounded in bytes (a list costs a few times its JSON in memory).
_tag_lists: AnswerMemory[TagPage] = AnswerMemory(32 * 1024 * 1024)
TAG_LIST_MEMORY_FACTOR = 4


def list_tags(upstream: Upstream, name: str, n: int | None, last: str | None) -> TagPage:
    """The upstream's tags in lexical order, page by page; the cached ones when the upstream
    is unreachable. Pagination is applied here too, as not every upstream honours n/last.
    An upstream tag list larger than MIRROR_TAG_LIST_MAX_BYTES is refused (502), never read
    whole: a list cut short would say tags do not exist that do."""
    repo_name = repository_name(upstream, name)
    if n == 0:
        return TagPage([], None)
    key = (upstream.pk, repo_name, n, last)
    remembered = _tag_lists.get(key)
    if remembered is not None:
        return remembered
    with _single_flight(f"tags:{upstream.pk}:{repo_name}:{n}:{last}"):
        remembered = _tag_lists.get(key)  # asked while we waited?
        if remembered is not None:
            return remembered
        page, size = _fetch_tag_page(upstream, repo_name, n, last)
        if not page.stale:
            _tag_lists.put(key, page, size * TAG_LIST_MEMORY_FACTOR, ttl=settings.MIRROR_TAG_LIST_TTL)
            # What to answer, stale, while the upstream is down (as long as a tag may be served stale).
            _tag_lists.put(("last", *key), page, size * TAG_LIST_MEMORY_FACTOR, ttl=upstream.max_staleness_seconds())
        return page


def _fetch_tag_page(upstream: Upstream, repo_name: str, n: int | None, last: str | None) -> tuple[TagPage, int]:
    limit = settings.MIRROR_TAG_LIST_MAX_BYTES
    try:
        response = upstream_client(upstream).get_tags(repo_name, n, last, limit)
    except oci.ManifestInvalid:  # what the client says of an answer past the limit
        logger.warning("upstream %s sent a tag list of %s larger than %d bytes", upstream.name, repo_name, limit)
        raise UpstreamTooLarge(
            "the upstream's tag list is larger than this mirror accepts", {"max_bytes": limit}
        ) from None
    except STALE_SERVABLE:
        if not upstream.serves_stale:
            raise
        answered = _tag_lists.get(("last", upstream.pk, repo_name, n, last))
        if answered is not None:  # the upstream's last answer for this page
            return TagPage(answered.tags, answered.next_last, stale=True), 0
        cached = list(
            Tag.objects.filter(repository__upstream=upstream, repository__name=repo_name).values_list("name", flat=True)
        )
        if not cached:
            raise
        return _paginate(sorted(cached), n, last, stale=True), 0
    page = _paginate(sorted(_parse_tag_list(response.content)), n, last)
    if page.next_last is None and page.tags and 'rel="next"' in response.headers.get("Link", ""):
        page = TagPage(page.tags, page.tags[-1])
    return page, len(response.content)


def _parse_tag_list(content: bytes) -> list[str]:
    try:
        tags = json.loads(content).get("tags") or []
    except (ValueError, AttributeError):
        raise UpstreamUnavailable("upstream sent an unreadable tag list") from None
    return [tag for tag in tags if isinstance(tag, str)]


def list_repositories(upstream: Upstream, n: int | None, last: str | None) -> TagPage:
    """What is cached from an upstream (the catalog), in lexical order."""
    names = Repository.objects.filter(upstream=upstream).order_by("name")
    if last:
        names = names.filter(name__gt=last)
    limit = n if n is not None else 1000
    page = list(names.values_list("name", flat=True)[: limit + 1])
    return TagPage(page[:limit], page[limit - 1] if len(page) > limit and limit else None)


def _paginate(items: list[str], n: int | None, last: str | None, stale: bool = False) -> TagPage:
    if last:
        items = [item for item in items if item > last]
    if n is None:
        return TagPage(items, None, stale)
    page = items[:n]
    return TagPage(page, page[-1] if len(items) > n and page else None, stale)
