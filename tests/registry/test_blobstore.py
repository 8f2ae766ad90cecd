import hashlib
import os

import pytest

from registry.oci import parse_digest
from registry.storage.blobstore import DigestMismatch, FilesystemStore


def digest_of(content: bytes):
    return parse_digest("sha256:" + hashlib.sha256(content).hexdigest())


def test_commit_publishes_verified_bytes_at_content_address(tmp_path):
    store = FilesystemStore(tmp_path)
    content = os.urandom(100_000)
    digest = digest_of(content)
    fill = store.begin_fill(digest, len(content))
    assert store.size(digest) is None
    fill.write(content[:50_000])
    assert store.size(digest) is None, "a fill in progress is invisible"
    fill.write(content[50_000:])
    path = fill.commit()
    assert path == tmp_path / "blobs" / "sha256" / digest.encoded[:2] / digest.encoded
    assert path.read_bytes() == content
    assert store.size(digest) == len(content)
    assert list(store.tmp_dir.iterdir()) == []


def test_wrong_bytes_are_never_stored(tmp_path):
    store = FilesystemStore(tmp_path)
    content = b"the real content"
    fill = store.begin_fill(digest_of(content))
    fill.write(b"the fake content")
    with pytest.raises(DigestMismatch):
        fill.commit()
    assert store.size(digest_of(content)) is None
    assert list(store.tmp_dir.iterdir()) == []


def test_size_mismatch_is_rejected_even_before_the_end(tmp_path):
    store = FilesystemStore(tmp_path)
    content = b"0123456789"
    fill = store.begin_fill(digest_of(content), expected_size=5)
    with pytest.raises(DigestMismatch):
        fill.write(content)
    fill.abort()
    short = store.begin_fill(digest_of(content), expected_size=len(content))
    short.write(content[:5])
    with pytest.raises(DigestMismatch):
        short.commit()
    assert store.size(digest_of(content)) is None
    assert list(store.tmp_dir.iterdir()) == []


def test_abandoned_fill_leaves_only_a_temporary_file(tmp_path):
    """What a killed process leaves behind: no blob, a temporary file for garbage collection."""
    store = FilesystemStore(tmp_path)
    content = b"x" * 1000
    fill = store.begin_fill(digest_of(content))
    fill.write(content[:10])
    fill._file.flush()
    assert store.size(digest_of(content)) is None
    assert [p.suffix for p in store.tmp_dir.iterdir()] == [".partial"]


def test_delete_and_open(tmp_path):
    store = FilesystemStore(tmp_path)
    content = b"abc"
    digest = digest_of(content)
    fill = store.begin_fill(digest)
    fill.write(content)
    fill.commit()
    with store.open(digest) as handle:
        assert handle.read() == content
    store.delete(digest)
    assert store.size(digest) is None


def test_a_store_that_cannot_stage_a_fill_is_unavailable_not_a_crash(tmp_path):
    from registry.storage.blobstore import StorageUnavailable

    store = FilesystemStore(tmp_path)
    store.tmp_dir.rmdir()  # the disk under it went away (a volume unmounted)
    with pytest.raises(StorageUnavailable) as raised:
        store.begin_fill(parse_digest("sha256:" + "a" * 64))
    assert raised.value.status == 503 and raised.value.code == "UNAVAILABLE"
