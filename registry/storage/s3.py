"""Blobs in an S3-compatible bucket (MIRROR_STORAGE=s3), by content address:
`<MIRROR_S3_PREFIX>/blobs/<algorithm>/<first two hex>/<hex>`, as on the filesystem.

A fill uploads while it streams: each MIRROR_S3_PART_SIZE bytes that land in the local
temporary file become a part of a multipart upload, sent by uploader threads (UPLOAD_THREADS
per fill) while the fill thread keeps downloading. Parts are invisible; only after the size
and digest are verified does CompleteMultipartUpload (or, for a blob smaller than one part,
a single PutObject) make the object appear. Once verified, and while that last step runs, the
fill's local followers may send the end of the blob from the temporary file, which stays in
place until the object is there. A mismatch or failure aborts the upload; a fill
whose process died leaves an incomplete upload, which garbage collection aborts once it is
older than any fill may take.

Hits are answered with a redirect to a presigned GET (MIRROR_S3_SERVE=redirect: the bytes
skip the mirror, the client asks its range of the bucket itself) or streamed through the
mirror with the requested range (MIRROR_S3_SERVE=stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
import io
import logging
import os
from pathlib import Path
import socket
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from registry.oci import Digest
from registry.storage.blobstore import (
    READ_SIZE,
    AbandonedUpload,
    BlobFill,
    BlobLocation,
    BlobStore,
    Redirect,
    StorageUnavailable,
    Streamed,
)

logger = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (all but the last)
MAX_PARTS = 10_000  # S3's most parts in one upload
CONTENT_TYPE = "application/octet-stream"
MISSING = {"404", "NoSuchKey", "NotFound"}
# Parts of one fill in flight at once: the download keeps going while they travel, and at most
# this many parts are read into memory.
UPLOAD_THREADS = 2
# Server threads share the client: enough pooled connections that they rarely wait.
MAX_POOL_CONNECTIONS = 64
# Tries of one request to the bucket (the first and one retry).
MAX_ATTEMPTS = 2


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    prefix: str
    serve: str
    presign_seconds: int
    part_size: int
    addressing_style: str
    data_dir: Path
    connect_timeout: float = 5.0
    read_timeout: float = 15.0

    @classmethod
    def from_settings(cls) -> S3Config:
        return cls(
            bucket=settings.MIRROR_S3_BUCKET,
            endpoint_url=settings.MIRROR_S3_ENDPOINT_URL,
            region=settings.MIRROR_S3_REGION,
            access_key_id=settings.MIRROR_S3_ACCESS_KEY_ID,
            secret_access_key=settings.MIRROR_S3_SECRET_ACCESS_KEY,
            prefix=settings.MIRROR_S3_PREFIX,
            serve=settings.MIRROR_S3_SERVE,
            presign_seconds=settings.MIRROR_S3_PRESIGN_SECONDS,
            part_size=settings.MIRROR_S3_PART_SIZE,
            addressing_style=settings.MIRROR_S3_ADDRESSING_STYLE,
            data_dir=Path(settings.MIRROR_DATA_DIR),
            connect_timeout=settings.MIRROR_S3_CONNECT_TIMEOUT,
            read_timeout=settings.MIRROR_S3_READ_TIMEOUT,
        )

    def check(self) -> None:
        if not self.bucket:
            raise ImproperlyConfigured("MIRROR_STORAGE=s3 needs MIRROR_S3_BUCKET")
        if self.serve not in ("redirect", "stream"):
            raise ImproperlyConfigured(f"MIRROR_S3_SERVE must be 'redirect' or 'stream', not {self.serve!r}")
        if self.part_size < MIN_PART_SIZE:
            raise ImproperlyConfigured(f"MIRROR_S3_PART_SIZE must be at least {MIN_PART_SIZE} (S3's minimum)")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ImproperlyConfigured("MIRROR_S3_ADDRESSING_STYLE must be 'auto', 'path' or 'virtual'")


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextmanager
def _bucket_errors() -> Iterator[None]:
    """The bucket unreachable or refusing: UNAVAILABLE for the client, logged for the operator."""
    try:
        yield
    except ClientError as error:
        logger.warning("object storage: %s", error)
        raise StorageUnavailable(f"bucket: {_error_code(error) or 'error'}") from None
    except BotoCoreError as error:
        logger.warning("object storage: %s", error)
        raise StorageUnavailable(f"bucket: {type(error).__name__}") from None


class S3Fill(BlobFill):
    """A fill that hands each full part to uploader threads as soon as it is written, so the
    download goes on while parts travel; the threads read their part from the temporary file."""

    releases_before_commit = True  # followers may read the verified end while the upload completes

    def __init__(self, store: S3Store, digest: Digest, expected_size: int | None):
        super().__init__(store.tmp_dir, digest, expected_size)
        self.store = store
        self.key = store.key(digest)
        self.upload_id: str | None = None
        self._uploads: list[Future] = []  # one per part, in part-number order
        self._uploader: ThreadPoolExecutor | None = None
        self._reader: int | None = None  # the uploaders' own descriptor of the temporary file
        self._upload_error: BaseException | None = None  # the first part that failed
        self._queued = 0  # bytes of the temporary file already handed to the uploaders
        # Larger parts for a blob that would otherwise need more than S3's 10,000.
        self.part_size = max(store.config.part_size, -(-(expected_size or 0) // MAX_PARTS))

    def _written(self) -> None:
        if self._upload_error is not None:
            raise self._upload_error  # a failed part fails the fill now, not at the end
        while self.size - self._queued >= self.part_size:
            self._queue_part(self.part_size)

    def _queue_part(self, length: int) -> None:
        if self.upload_id is None:
            client, bucket = self.store.client, self.store.config.bucket
            self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=self.key, ContentType=CONTENT_TYPE)[
                "UploadId"
            ]
            self._reader = os.open(self.temp_path, os.O_RDONLY)
            self._uploader = ThreadPoolExecutor(
                max_workers=UPLOAD_THREADS, thread_name_prefix=f"part-{self.digest.encoded[:12]}"
            )
        number = len(self._uploads) + 1
        upload = self._uploader.submit(self._send_part, number, self._queued, length)
        upload.add_done_callback(self._note_failure)
        self._uploads.append(upload)
        self._queued += length

    def _send_part(self, number: int, offset: int, length: int) -> dict:
        # Read back from the temporary file (the page cache): at most one part per thread in memory.
        body = os.pread(self._reader, length, offset)
        answer = self.store.client.upload_part(
            Bucket=self.store.config.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _note_failure(self, upload: Future) -> None:
        if not upload.cancelled() and upload.exception() is not None and self._upload_error is None:
            self._upload_error = upload.exception()

    def _stop_uploader(self) -> None:
        """Wait for the parts in flight (none is sent after this) and let go of the file."""
        if self._uploader is not None:
            self._uploader.shutdown(wait=True, cancel_futures=True)
            self._uploader = None
        if self._reader is not None:
            os.close(self._reader)
            self._reader = None

    def _publish(self) -> None:
        """Verified: send what is left and let the object appear."""
        client, bucket = self.store.client, self.store.config.bucket
        try:
            if self.upload_id is None:  # smaller than one part: a single upload is cheaper
                body = os.pread(self._file.fileno(), self.size, 0)
                client.put_object(Bucket=bucket, Key=self.key, Body=body, ContentType=CONTENT_TYPE)
            else:
                if self.size > self._queued:
                    self._queue_part(self.size - self._queued)
                parts = [upload.result() for upload in self._uploads]  # the first failure raises
                client.complete_multipart_upload(
                    Bucket=bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
                )
                self.upload_id = None
        finally:
            self._stop_uploader()
        # Followers that opened the temporary file keep reading it; later ones read the object.
        self._file.close()
        self.temp_path.unlink(missing_ok=True)

    def _discard(self) -> None:
        self._stop_uploader()  # no part may land after the abort
        if self.upload_id is None:
            return
        try:
            self.store.client.abort_multipart_upload(
                Bucket=self.store.config.bucket, Key=self.key, UploadId=self.upload_id
            )
        except (BotoCoreError, ClientError) as error:
            # Still invisible; garbage collection aborts it later.
            logger.warning("could not abort the upload of %s: %s", self.digest, error)
        self.upload_id = None


class S3Store(BlobStore):
    def __init__(self, config: S3Config):
        config.check()
        self.config = config
        self.prefix = config.prefix.strip("/") + "/" if config.prefix.strip("/") else ""
        self.tmp_dir = config.data_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        # Empty credentials: boto3's default chain (environment, profile, instance role).
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url or None,
            region_name=config.region,
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": config.addressing_style},
                max_pool_connections=MAX_POOL_CONNECTIONS,
                # A bucket that stops answering costs a request at most two tries of these
                # (botocore waits 60 s and tries thrice by default), then 503 UNAVAILABLE.
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            ),
        )

    def key(self, digest: Digest) -> str:
        return f"{self.prefix}blobs/{self.relative_path(digest)}"

    def size(self, digest: Digest) -> int | None:
        with _bucket_errors():
            try:
                return self.client.head_object(Bucket=self.config.bucket, Key=self.key(digest))["ContentLength"]
            except ClientError as error:
                if _error_code(error) in MISSING:
                    return None
                raise

    def begin_fill(self, digest: Digest, expected_size: int | None = None) -> S3Fill:
        return S3Fill(self, digest, expected_size)

    def _get(self, digest: Digest, byte_range: str | None):
        """The object's body (FileNotFoundError when there is none)."""
        extra = {"Range": byte_range} if byte_range else {}
        with _bucket_errors():
            try:
                return self.client.get_object(Bucket=self.config.bucket, Key=self.key(digest), **extra)["Body"]
            except ClientError as error:
                if _error_code(error) in MISSING:
                    raise FileNotFoundError(self.key(digest)) from None
                raise

    def read(self, digest: Digest, start: int = 0) -> Iterator[bytes]:
        # Followers ask for what is left, never nothing (fills.Follower checks).
        body = self._get(digest, f"bytes={start}-" if start else None)

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(READ_SIZE)

        return chunks()

    def open_range(self, digest: Digest, start: int, length: int):
        """A readable body of `length` bytes from `start` (FileNotFoundError when gone)."""
        if length <= 0:
            return io.BytesIO(b"")
        return self._get(digest, f"bytes={start}-{start + length - 1}")

    def location(self, digest: Digest) -> BlobLocation:
        if self.config.serve == "stream":
            return Streamed(lambda start, length: self.open_range(digest, start, length))
        url = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.config.bucket, "Key": self.key(digest)},
            ExpiresIn=self.config.presign_seconds,
        )
        return Redirect(url)

    def delete(self, digest: Digest) -> None:
        with _bucket_errors():
            self.client.delete_object(Bucket=self.config.bucket, Key=self.key(digest))

    def stored_sizes(self) -> dict[str, int]:
        sizes = {}
        blobs = f"{self.prefix}blobs/"
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=blobs):
            for item in page.get("Contents", ()):
                parts = item["Key"][len(blobs) :].split("/")
                if len(parts) == 3:  # algorithm/ab/hex
                    sizes[f"{parts[0]}:{parts[2]}"] = item["Size"]
        return sizes

    def abandoned_uploads(self, started_before: datetime) -> list[AbandonedUpload]:
        found = []
        blobs = f"{self.prefix}blobs/"
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.config.bucket, Prefix=blobs):
            for upload in page.get("Uploads", ()):
                parts = upload["Key"][len(blobs) :].split("/")
                if upload["Initiated"] < started_before and len(parts) == 3:
                    found.append(
                        AbandonedUpload(
                            f"{parts[0]}:{parts[2]}",
                            upload["Key"],
                            upload["UploadId"],
                            upload["Initiated"],
                            self._uploaded_bytes(upload),
                        )
                    )
        return found

    def _uploaded_bytes(self, upload: dict) -> int:
        try:
            parts = self.client.get_paginator("list_parts").paginate(
                Bucket=self.config.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            return sum(part["Size"] for page in parts for part in page.get("Parts", ()))
        except ClientError:  # completed or aborted meanwhile
            return 0

    def abort_upload(self, upload: AbandonedUpload) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.config.bucket, Key=upload.key, UploadId=upload.upload_id)
        except ClientError as error:
            if _error_code(error) not in ("NoSuchUpload", "404"):
                raise

    def probe(self) -> None:
        super().probe()  # fills stage their bytes locally too
        key = f"{self.prefix}readiness/{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        with _bucket_errors():
            self.client.put_object(Bucket=self.config.bucket, Key=key, Body=b"ok")
            self.client.delete_object(Bucket=self.config.bucket, Key=key)
