"""Where bytes live: the blob store interface, the filesystem and S3 stores, named locks.

`default_store()` is the store MIRROR_STORAGE names (`filesystem`, or `s3`). It lives here,
above both stores, so that neither store module imports the other.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from registry.storage.blobstore import BlobStore, FilesystemStore

if TYPE_CHECKING:
    from registry.storage.s3 import S3Config


def default_store() -> BlobStore:
    """The store MIRROR_STORAGE names, one per process and configuration."""
    if settings.MIRROR_STORAGE == "filesystem":
        return FilesystemStore(settings.MIRROR_DATA_DIR)
    if settings.MIRROR_STORAGE == "s3":
        from registry.storage.s3 import S3Config  # boto3 is loaded only where S3 is configured

        return _s3_store(S3Config.from_settings())
    raise ImproperlyConfigured(f"MIRROR_STORAGE must be 'filesystem' or 's3', not {settings.MIRROR_STORAGE!r}")


@functools.lru_cache(maxsize=4)
def _s3_store(config: S3Config) -> BlobStore:
    # Cached: a boto3 client is costly to build, and thread-safe to share.
    from registry.storage.s3 import S3Store

    return S3Store(config)
