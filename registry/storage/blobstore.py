"""Content-addressed blob storage: the interface the cache, fills and garbage collection use,
and its filesystem implementation (the S3 one is s3.py; the package's `default_store` picks
the configured one).

Every store keeps a local staging directory (`<MIRROR_DATA_DIR>/tmp/`): a fill writes its bytes
to a temporary file there, hashing as it goes, so that clients of the same replica can follow
the growing file. Only `BlobFill.commit` makes the blob visible in the store, after its size
and digest match; `abort` discards it. A crash at any point leaves either no blob or a
complete, verified one, plus perhaps leftovers for garbage collection (a temporary file, an
incomplete upload).

Filesystem layout: `<root>/blobs/<algorithm>/<first two hex>/<hex>`, published with an atomic
rename of the temporary file (same filesystem).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
import os
from pathlib import Path
import tempfile

from registry import oci
from registry.oci import Digest

READ_SIZE = 1024 * 1024


class DigestMismatch(Exception):
    """The bytes received do not hash to the digest they were fetched for."""


class StorageUnavailable(oci.Unavailable):
    """The store cannot be read or written: clients get UNAVAILABLE, readiness fails."""


# --- how a committed blob is served ----------------------------------------------------------
@dataclass(frozen=True)
class LocalFile:
    """On this machine's disk: sent with sendfile, or handed to nginx (X-Accel-Redirect)."""

    path: Path
    relative_path: str  # its address under the store's blobs/ directory


@dataclass(frozen=True)
class Redirect:
    """Elsewhere, at a short-lived URL the client fetches (and asks its range of) itself."""

    url: str


@dataclass(frozen=True)
class Streamed:
    """Elsewhere, read through the mirror: `open(start, length)` returns a readable body and
    raises FileNotFoundError when the blob is gone."""

    open: Callable[[int, int], object]


BlobLocation = LocalFile | Redirect | Streamed


@dataclass(frozen=True)
class AbandonedUpload:
    """An upload to the store that no fill will finish (its owner died): bytes nobody sees."""

    digest: str  # of the blob it was a fill of
    key: str
    upload_id: str
    started: datetime
    size: int


# --- writing ---------------------------------------------------------------------------------
class BlobFill(ABC):
    """Bytes being written for one digest; invisible until committed.

    The bytes land in a local temporary file (followers read it while it grows) and are
    hashed on the way; subclasses publish them to their store once verified.
    """

    def __init__(self, tmp_dir: Path, digest: Digest, expected_size: int | None):
        self.digest = digest
        self.expected_size = expected_size
        self.size = 0
        self._hasher = digest.hasher()
        try:
            fd, name = tempfile.mkstemp(
                dir=tmp_dir, prefix=f"{digest.algorithm}-{digest.encoded[:16]}.", suffix=".partial"
            )
        except OSError as error:  # disk full, read-only, gone: the client may retry, nothing crashed
            raise StorageUnavailable(f"cannot stage the blob: {error.strerror or type(error).__name__}") from None
        self.temp_path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._file.flush()  # followers read the temporary file while it grows
        self._hasher.update(chunk)
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise DigestMismatch(f"{self.digest}: more than the expected {self.expected_size} bytes")
        self._written()

    # Whether the temporary file stays in place, complete, while a verified blob is published
    # (so followers may read its end before the commit finishes): worth it for a slow commit.
    releases_before_commit = False

    def commit(self, on_verified: Callable[[], None] | None = None):
        """Verify and publish the blob; on any mismatch or failure nothing becomes visible.

        `on_verified` is called once size and digest match, before a store that
        `releases_before_commit` publishes (the temporary file then stays until it is done)."""
        try:
            if self.expected_size is not None and self.size != self.expected_size:
                raise DigestMismatch(f"{self.digest}: got {self.size} bytes, expected {self.expected_size}")
            actual = self._hasher.hexdigest()
            if actual != self.digest.encoded:
                raise DigestMismatch(f"{self.digest}: content hashes to {self.digest.algorithm}:{actual}")
            self._file.flush()
            if self.releases_before_commit and on_verified is not None:
                on_verified()
            return self._publish()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            self._discard()
        finally:
            self.temp_path.unlink(missing_ok=True)

    def _written(self) -> None:  # noqa: B027 (a hook: most stores need nothing here)
        """A chunk was appended to the temporary file."""

    @abstractmethod
    def _publish(self):
        """Make the verified bytes of the temporary file the stored blob."""

    def _discard(self) -> None:  # noqa: B027 (a hook: most stores need nothing here)
        """Drop whatever was sent to the store before the fill was abandoned."""


class BlobStore(ABC):
    """Where committed blobs live, by digest."""

    tmp_dir: Path  # local staging: fills' temporary files, their sidecars, lock files

    @staticmethod
    def relative_path(digest: Digest) -> str:
        """The blob's content address under blobs/ (also what nginx is told to send)."""
        # Digest was validated by oci.parse_digest: algorithm and hex only, no separators.
        return f"{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"

    @abstractmethod
    def size(self, digest: Digest) -> int | None:
        """Size of a committed blob, or None when it is not stored."""

    @abstractmethod
    def begin_fill(self, digest: Digest, expected_size: int | None = None) -> BlobFill: ...

    @abstractmethod
    def read(self, digest: Digest, start: int = 0) -> Iterator[bytes]:
        """A committed blob's bytes from `start` on (FileNotFoundError when not stored)."""

    @abstractmethod
    def location(self, digest: Digest) -> BlobLocation:
        """How a hit on a committed blob is served."""

    @abstractmethod
    def delete(self, digest: Digest) -> None: ...

    @abstractmethod
    def stored_sizes(self) -> dict[str, int]:
        """Every committed blob: digest → size (one listing, for garbage collection)."""

    def abandoned_uploads(self, started_before: datetime) -> list[AbandonedUpload]:
        """Uploads begun before then and never completed (none for stores that have none)."""
        return []

    def abort_upload(self, upload: AbandonedUpload) -> None:
        raise NotImplementedError

    def probe(self) -> None:
        """Write and delete something, as a fill would: StorageUnavailable if that fails."""
        try:
            with tempfile.TemporaryFile(dir=self.tmp_dir) as probe:
                probe.write(b"ok")
        except OSError as error:
            raise StorageUnavailable(error.strerror or type(error).__name__) from None


# --- the filesystem --------------------------------------------------------------------------
class FilesystemFill(BlobFill):
    def __init__(self, store: FilesystemStore, digest: Digest, expected_size: int | None):
        super().__init__(store.tmp_dir, digest, expected_size)
        self.store = store

    def _publish(self) -> Path:
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.store.path(self.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temp_path, final)
        _fsync_directory(final.parent)
        return final


class FilesystemStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.blob_dir / self.relative_path(digest)

    def size(self, digest: Digest) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: Digest):
        return open(self.path(digest), "rb")

    def begin_fill(self, digest: Digest, expected_size: int | None = None) -> FilesystemFill:
        return FilesystemFill(self, digest, expected_size)

    def read(self, digest: Digest, start: int = 0) -> Iterator[bytes]:
        handle = self.open(digest)  # now, so that a missing blob raises here

        def chunks() -> Iterator[bytes]:
            with handle:
                handle.seek(start)
                while data := handle.read(READ_SIZE):
                    yield data

        return chunks()

    def location(self, digest: Digest) -> LocalFile:
        return LocalFile(self.path(digest), self.relative_path(digest))

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def stored_sizes(self) -> dict[str, int]:
        sizes = {}
        for path in self.blob_dir.glob("*/*/*"):
            try:
                sizes[f"{path.parent.parent.name}:{path.name}"] = path.stat().st_size
            except FileNotFoundError:  # deleted meanwhile
                continue
        return sizes


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
