"""Blobs, pulled through: stat, fetch, fill, and who may be served what (provenance).

A miss is filled once per digest in any process (fills.py), and its bytes stream to the client
as they arrive. Functions take a route (the upstream, and the repository as the client named
it: `routing.Route`); they know nothing of HTTP requests. Distribution's
registry/proxy/proxyblobstore.go is the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
import logging
import time

from django.conf import settings
from django.db import DatabaseError, IntegrityError

from registry import oci, signals
from registry.models import Blob, ManifestReference, Repository, RepositoryBlob, Upstream
from registry.proxy import pulltimes
from registry.proxy.fills import BlobFills, UpstreamDigestMismatch
from registry.proxy.repositories import link_blobs, repository_record
from registry.proxy.upstream_calls import single_flight, upstream_client
from registry.storage import default_store
from registry.storage.blobstore import BlobLocation, BlobStore
from registry.upstreams.client import BlobDownload, UpstreamUnavailable
from registry.upstreams.routing import Route

logger = logging.getLogger(__name__)


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


def stat_blob(route: Route, digest: oci.Digest, store: BlobStore | None = None, reader: BlobReader = NO_CLIENT) -> int:
    """The size of a blob, for HEAD: from cache, else an upstream HEAD. Never downloads."""
    store = store or default_store()
    upstream, repo_name = route.upstream, route.repository
    signals.target(upstream, repo_name)
    size = store.size(digest)
    link = _link_of(upstream, repo_name, digest) if size is not None else None
    if size is not None and link is not None and _readable(link, digest, reader):
        pulltimes.record(Blob, "digest", str(digest))
        return size
    head = upstream_client(upstream).head_blob(repo_name, str(digest))
    if size is not None:
        # The upstream just said this repository has the blob we already hold.
        link_blobs(repository_record(upstream, repo_name), [str(digest)])
        if _readable(_link_of(upstream, repo_name, digest), digest, reader):
            return size
        # Not ours to vouch for here: say what the upstream says, as for a blob not cached.
    signals.upstream_used(upstream, repo_name, signals.BLOB)  # not cached: answered by the upstream
    if head.content_length is None:
        raise UpstreamUnavailable("upstream did not say the blob's size")
    return head.content_length


def fetch_blob(
    route: Route, digest: oci.Digest, store: BlobStore | None = None, reader: BlobReader = NO_CLIENT
) -> CachedBlob | FillingBlob:
    """A cached blob, or the bytes of its fill as they arrive. Concurrent misses for one
    digest, in any process, share one upstream download (see fills.py)."""
    store = store or default_store()
    upstream, repo_name = route.upstream, route.repository
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
        return fetch_blob(route, digest, store, reader)
    if not _may_follow(follower.source, source, reader):
        # Another repository's fill, whose bytes this client may not have: wait for it to be
        # committed, then be served (or not) as a hit is.
        fills.wait_for_commit(digest)
        return fetch_blob(route, digest, store, reader)
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
        link_blobs(repository_record(upstream, repo_name), [str(digest)])
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
    with single_flight(f"prove:{upstream.pk}:{repo_name}@{digest}"):
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
        repository = repository_record(upstream, repo_name)
        _link_delivered(repository, digest)
        if not _asks(reader.is_private, upstream, repo_name, failed=True):
            Blob.objects.filter(digest=str(digest), origin_private=True).update(origin=repository, origin_private=False)


def _record_blob(upstream: Upstream, repo_name: str, digest: oci.Digest, size: int, reader: BlobReader) -> None:
    """Bookkeeping after a commit; the committed file is what counts, so a database hiccup
    here is logged, not raised (the link is made again on the next pull)."""
    signals.upstream_used(upstream, repo_name, signals.BLOB, size)
    try:
        repository = repository_record(upstream, repo_name)
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
