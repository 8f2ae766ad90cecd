"""Content-addressed blob storage on the local filesystem.

Layout: `<root>/blobs/<algorithm>/<first two hex>/<hex>`. A fill writes a temporary file in
`<root>/tmp/` (same filesystem), hashing as it goes; only `BlobFill.commit` makes it visible,
after the size and digest match, with an atomic rename. A crash at any point leaves either
no blob or a complete, verified one, plus perhaps a temporary file for garbage collection.
"""
from __future__ import annotations

import os
from pathlib import Path
import tempfile

from django.conf import settings

from .oci import Digest


class DigestMismatch(Exception):
    """The bytes received do not hash to the digest they were fetched for."""


class BlobFill:
    """Bytes being written for one digest; invisible until committed."""

    def __init__(self, store: "BlobStore", digest: Digest, expected_size: int | None):
        self.store = store
        self.digest = digest
        self.expected_size = expected_size
        self.size = 0
        self._hasher = digest.hasher()
        fd, name = tempfile.mkstemp(
            dir=store.tmp_dir, prefix=f"{digest.algorithm}-{digest.encoded[:16]}.", suffix=".partial"
        )
        self.temp_path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._file.flush()  # followers read the temporary file while it grows
        self._hasher.update(chunk)
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise DigestMismatch(f"{self.digest}: more than the expected {self.expected_size} bytes")

    def commit(self) -> Path:
        """Verify and publish the blob; on any mismatch nothing becomes visible."""
        try:
            if self.expected_size is not None and self.size != self.expected_size:
                raise DigestMismatch(f"{self.digest}: got {self.size} bytes, expected {self.expected_size}")
            actual = self._hasher.hexdigest()
            if actual != self.digest.encoded:
                raise DigestMismatch(f"{self.digest}: content hashes to {self.digest.algorithm}:{actual}")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final = self.store.path(self.digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.temp_path, final)
            _fsync_directory(final.parent)
            return final
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.temp_path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def relative_path(digest: Digest) -> str:
        """The blob's content address under blobs/ (also what nginx is told to send)."""
        # Digest was validated by oci.parse_digest: algorithm and hex only, no separators.
        return f"{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"

    def path(self, digest: Digest) -> Path:
        return self.blob_dir / self.relative_path(digest)

    def size(self, digest: Digest) -> int | None:
        """Size of a committed blob, or None when it is not stored."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: Digest):
        return open(self.path(digest), "rb")

    def begin_fill(self, digest: Digest, expected_size: int | None = None) -> BlobFill:
        return BlobFill(self, digest, expected_size)

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_store() -> BlobStore:
    return BlobStore(settings.MIRROR_DATA_DIR)
