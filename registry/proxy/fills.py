"""Single-flight blob fills: one upstream download per digest, however many clients want it.

The first request for a missing blob takes the digest's lock and starts a fill in a
background thread; the thread, not the client, owns the upstream download, so the fill
goes on (up to MIRROR_FILL_TIMEOUT) when the client disconnects. A sidecar file next to the
temporary file says where the bytes are being written and how many to expect. Every client,
the first one included, follows the growing temporary file and is sent bytes as they land.

The last HOLD_BACK bytes are only sent once size and digest are verified, so no client ever
receives a complete wrong blob: on a mismatch the response is cut short, or, for a blob that
fits in the held-back part, fails before it starts. On the filesystem that moment is the commit
(a rename); a store whose commit takes longer (object storage: the last part, then completing
the upload) marks the fill "verified" first, and local followers send the end from the
temporary file while the commit runs. The blob is only recorded (`on_commit`) once committed.

A fill whose owner died (killed process, expired Redis lock) is taken over by a follower;
a fill that failed (upstream error, digest mismatch) leaves a failure record, and its
followers end with a clean error instead of waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
import json
import logging
import os
import threading
import time

from django.db import connections

from registry import oci
from registry.storage import locks
from registry.storage.blobstore import BlobFill, BlobStore, DigestMismatch
from registry.upstreams.client import BlobDownload, BlobSizeInvalid, UpstreamUnavailable

logger = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
HOLD_BACK = 1024 * 1024
POLL_INTERVAL = 0.01
MAX_WAIT_POLL = 0.25  # between looks at the store while another replica fills
TAKEOVERS = 1  # how many dead fills one follower restarts before giving up


class UpstreamDigestMismatch(oci.RegistryError):
    """The upstream's bytes for a digest hash to something else: nothing is stored."""

    code, status = "DIGEST_INVALID", 502


class FillFailed(oci.Unavailable):
    """The fill a client was following failed upstream."""


@dataclass(frozen=True)
class FillState:
    temp: str  # file name in the store's tmp directory
    size: int | None
    failed: str | None = None  # "digest", "size" or "upstream" when the fill gave up
    verified: bool = False  # size and digest matched; the temporary file is complete
    # The upstream and repository the bytes are downloaded through ("<upstream pk>/<name>"):
    # a client of another repository may be refused them (blobs.py).
    source: str = ""


class Sidecar:
    """`tmp/<algorithm>-<hex>.fill`: the state of the current fill of one digest."""

    def __init__(self, store: BlobStore, digest: oci.Digest):
        self.path = store.tmp_dir / f"{digest.algorithm}-{digest.encoded}.fill"

    def read(self) -> FillState | None:
        try:
            return FillState(**json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write(self, state: FillState) -> None:
        partial = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_text(json.dumps(asdict(state)))
        os.replace(partial, self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


OpenDownload = Callable[[], BlobDownload]
OnCommit = Callable[[int], None]


class BlobFills:
    """Fills of one blob store."""

    def __init__(self, store: BlobStore, timeout: float):
        self.store = store
        self.timeout = timeout

    def follow(
        self, digest: oci.Digest, open_download: OpenDownload, on_commit: OnCommit, source: str = ""
    ) -> Follower | None:
        """A follower of the digest's fill (started here if nobody is filling, through `source`),
        or None when the blob turned out to be committed already."""
        sidecar = Sidecar(self.store, digest)
        deadline = time.monotonic() + self.timeout
        pause = POLL_INTERVAL
        while time.monotonic() < deadline:
            if self.store.size(digest) is not None:
                return None
            lock = locks.named_lock(f"fill:{digest}")
            if lock.try_acquire():
                if self.store.size(digest) is not None:  # committed while we took the lock
                    lock.release()
                    return None
                state = self.start_fill(digest, sidecar, lock, open_download, on_commit, source)
                return Follower(self, digest, sidecar, state, open_download, on_commit, source)
            state = sidecar.read()
            if state is not None and state.failed is None:
                return Follower(self, digest, sidecar, state, open_download, on_commit, source)
            # The owner has the lock but has not written its sidecar yet, or it fills on another
            # replica (object storage): its sidecar is not ours to see, the committed blob will
            # be. Ask the store less and less often while waiting.
            time.sleep(pause)
            pause = min(pause * 2, MAX_WAIT_POLL)
        raise UpstreamUnavailable("timed out waiting for another download of this blob")

    def wait_for_commit(self, digest: oci.Digest) -> None:
        """Return once the digest's current fill has ended (committed or failed), or raise
        after the fill timeout."""
        sidecar = Sidecar(self.store, digest)
        deadline = time.monotonic() + self.timeout
        pause = POLL_INTERVAL
        while time.monotonic() < deadline:
            state = sidecar.read()
            if self.store.size(digest) is not None or state is None or state.failed:
                return
            time.sleep(pause)
            pause = min(pause * 2, MAX_WAIT_POLL)
        raise UpstreamUnavailable("timed out waiting for another download of this blob")

    def start_fill(
        self,
        digest: oci.Digest,
        sidecar: Sidecar,
        lock: locks.Lock,
        open_download: OpenDownload,
        on_commit: OnCommit,
        source: str = "",
    ) -> FillState:
        """Open the upstream download and hand it to a fill thread; we hold `lock`."""
        try:
            download = open_download()
        except BaseException:
            lock.release()
            raise
        try:
            fill = self.store.begin_fill(digest, download.size)
            state = FillState(temp=fill.temp_path.name, size=download.size, source=source)
            sidecar.write(state)
        except BaseException:
            download.close()
            lock.release()
            raise
        thread = threading.Thread(
            target=self._run,
            args=(digest, download, fill, sidecar, state, lock, on_commit),
            name=f"fill-{digest.encoded[:12]}",
            daemon=True,
        )
        thread.start()
        return state

    def _run(
        self,
        digest: oci.Digest,
        download: BlobDownload,
        fill: BlobFill,
        sidecar: Sidecar,
        state: FillState,
        lock: locks.Lock,
        on_commit: OnCommit,
    ) -> None:
        deadline = time.monotonic() + self.timeout
        verified = False

        def release() -> None:
            nonlocal verified
            verified = True
            sidecar.write(replace(state, size=fill.size, verified=True))

        try:
            for chunk in download.chunks():
                fill.write(chunk)
                lock.keep_alive()
                if time.monotonic() > deadline:
                    raise UpstreamUnavailable("blob fill timed out")
            fill.commit(on_verified=release)
            on_commit(fill.size)
            sidecar.delete()
        except DigestMismatch as error:
            logger.error("upstream blob %s rejected: %s", digest, error)
            fill.abort()
            sidecar.write(replace(state, failed="digest"))
        except BlobSizeInvalid as error:  # more bytes than the fill may have
            logger.error("upstream blob %s rejected: %s", digest, error.message)
            fill.abort()
            sidecar.write(replace(state, failed="size"))
        except Exception as error:
            if verified:  # followers may have the whole blob; the store does not
                logger.error("verified blob %s could not be stored: %s", digest, getattr(error, "message", error))
            else:
                logger.warning("fill of %s failed: %s", digest, getattr(error, "message", error))
            fill.abort()
            sidecar.write(replace(state, failed="upstream"))
        finally:
            download.close()
            lock.release()
            connections.close_all()  # this thread's database connections


class Follower:
    """Reads a fill's bytes as they land, from whichever fill of the digest is current."""

    def __init__(
        self,
        fills: BlobFills,
        digest: oci.Digest,
        sidecar: Sidecar,
        state: FillState,
        open_download: OpenDownload,
        on_commit: OnCommit,
        source: str = "",
    ):
        self.fills = fills
        self.digest = digest
        self.sidecar = sidecar
        self.state = state
        self.size = state.size
        self._open_download = open_download
        self._on_commit = on_commit
        self._source = source

    @property
    def source(self) -> str:
        """The repository the followed fill downloads through."""
        return self.state.source

    def chunks(self) -> Iterator[bytes]:
        store = self.fills.store
        deadline = time.monotonic() + self.fills.timeout
        takeovers = TAKEOVERS
        offset = 0
        source, fd = None, None  # the temporary file we read, by name
        try:
            while True:
                if self._committed():
                    # The rest (at least the held-back part) from the store, verified; a
                    # follower that read the verified file to its end has nothing left to ask
                    # for (S3 answers a range from the object's size with InvalidRange).
                    if offset < self.size:
                        yield from store.read(self.digest, offset)
                    return
                if source != self.state.temp:
                    fd = _reopen(fd, store.tmp_dir / self.state.temp)
                    source = self.state.temp if fd is not None else None
                available = os.fstat(fd).st_size if fd is not None else 0
                if self.state.verified and fd is not None:
                    # Verified and still in place: the whole file, held-back end included.
                    if offset >= self.state.size:
                        return
                    limit = min(available, self.state.size)
                else:
                    limit = available - HOLD_BACK
                if offset < limit:
                    data = os.pread(fd, min(READ_SIZE, limit - offset), offset)
                    offset += len(data)
                    yield data
                    continue
                if time.monotonic() > deadline:
                    raise UpstreamUnavailable("blob fill timed out")
                state = self.sidecar.read()
                if state is not None and state.temp != self.state.temp and state.failed is None:
                    self.state = state  # a newer fill of the same digest: same bytes, new file
                    continue
                if (
                    state is not None
                    and state.temp == self.state.temp
                    and state.verified
                    and state.failed is None
                    and not self.state.verified
                ):
                    self.state = state  # our fill's bytes are verified: the end may go
                    continue
                if state is not None and state.failed:
                    # Any failure recorded after we joined is of our fill or of its successor.
                    if state.failed == "digest":
                        raise UpstreamDigestMismatch(
                            "upstream sent bytes that do not match the digest", {"digest": str(self.digest)}
                        )
                    if state.failed == "size":
                        raise BlobSizeInvalid(
                            "upstream sent more bytes than the blob may have", {"digest": str(self.digest)}
                        )
                    raise FillFailed("the upstream download of this blob failed", {"digest": str(self.digest)})
                lock = locks.named_lock(f"fill:{self.digest}")
                if lock.try_acquire():
                    # Nobody owns the fill any more. Committed meanwhile, or its owner died.
                    if self.fills.store.size(self.digest) is not None:
                        lock.release()
                        continue
                    if takeovers == 0:
                        lock.release()
                        raise FillFailed("the upstream download of this blob stopped", {"digest": str(self.digest)})
                    takeovers -= 1
                    logger.warning("taking over the abandoned fill of %s", self.digest)
                    self.state = self.fills.start_fill(
                        self.digest, self.sidecar, lock, self._open_download, self._on_commit, self._source
                    )
                    continue
                time.sleep(POLL_INTERVAL)
        finally:
            if fd is not None:
                os.close(fd)

    def _committed(self) -> bool:
        """The blob is in the store and its fill has finished its bookkeeping (the fill
        removes its sidecar last), so a client that got every byte can pull it again as a hit."""
        state = self.sidecar.read()
        if state is not None and state.temp == self.state.temp and state.failed is None:
            return False  # still being filled: no need to ask the store (a request, on S3)
        return self.fills.store.size(self.digest) is not None


def _reopen(fd: int | None, path) -> int | None:
    if fd is not None:
        os.close(fd)
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
