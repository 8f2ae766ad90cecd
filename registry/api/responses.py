"""How registry answers are put on the wire: error JSON, common headers, byte ranges, files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import functools
import io
import logging
import os
from pathlib import Path
import re

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import FileResponse, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
import redis

from registry import oci
from registry.storage.blobstore import BlobLocation, Redirect, Streamed

logger = logging.getLogger(__name__)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
# On every /v2/ answer: its bytes come from upstreams, so a browser must never sniff them into
# a page, nor run anything in one (a manifest or blob opened from the admin's origin).
REGISTRY_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; sandbox"),
)
READ_METHODS = ("GET", "HEAD")
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)\Z")


def error_response(error: oci.RegistryError, method: str = "GET") -> HttpResponse:
    body = error.as_json()
    response = HttpResponse(b"" if method == "HEAD" else body, status=error.status, content_type="application/json")
    response["Content-Length"] = str(len(body))
    for name, value in getattr(error, "headers", {}).items():  # e.g. an authentication challenge
        response[name] = value
    retry_after = error.detail.get("retry_after") if isinstance(error.detail, dict) else None
    if isinstance(error, oci.TooManyRequests) and re.fullmatch(r"[0-9]{1,9}", str(retry_after or "")):
        response["Retry-After"] = str(retry_after)  # the upstream's, or when an account may be tried again
    return response


def is_registry_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def secure_registry_response(response: HttpResponse) -> HttpResponse:
    for name, value in REGISTRY_SECURITY_HEADERS:
        response[name] = value
    return response


class RegistryHeadersMiddleware:
    """Outermost: every /v2/ answer carries REGISTRY_SECURITY_HEADERS, whoever made it (a
    view, an error, the network allow-list, client authentication, a redirect to add a slash)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if is_registry_path(request.path):
            secure_registry_response(response)
        return response


# The mirror's own dependencies unreachable or timing out. Of the database's errors only these:
# an IntegrityError or ProgrammingError is a bug, and stays a logged 500.
DEPENDENCY_ERRORS = (OperationalError, InterfaceError, BotoCoreError, ClientError, redis.RedisError)


def _dependency(error: BaseException) -> str:
    if isinstance(error, DatabaseError):
        return "database"
    if isinstance(error, redis.RedisError):
        return "Redis"
    return "object storage"


def registry_endpoint(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Read-only registry endpoint: writes are UNSUPPORTED, RegistryError becomes its JSON,
    and every answer carries the API version header and REGISTRY_SECURITY_HEADERS."""

    @csrf_exempt
    @functools.wraps(view)
    def endpoint(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            if request.method not in READ_METHODS:
                raise oci.Unsupported("this mirror is read-only: pushes and deletes are not supported")
            response = view(request, *args, **kwargs)
        except oci.RegistryError as error:
            response = error_response(error, request.method)
        except DEPENDENCY_ERRORS as error:
            # The mirror's own database, bucket or Redis failed or timed out: the client may
            # retry (or another replica may serve), it did nothing wrong and nothing crashed.
            logger.warning(
                "%s %s: %s unavailable: %s", request.method, request.path, _dependency(error), type(error).__name__
            )
            response = error_response(
                oci.Unavailable(f"the mirror's {_dependency(error)} is unavailable"), request.method
            )
        except Exception:
            logger.exception("unexpected error serving %s %s", request.method, request.path)
            response = error_response(oci.RegistryError("internal error"), request.method)
        response[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        secure_registry_response(response)
        namespace = getattr(request, "oci_namespace", None)
        if namespace:  # containerd's ?ns= chose the upstream (routing.route)
            response["OCI-Namespace"] = namespace
        return response

    return endpoint


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range of a `Range` header; None for the whole blob.

    Only one range is served (registries clients ask for one); anything else, and a range
    outside the blob, is RANGE_INVALID with status 416.
    """
    if header is None:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        raise oci.RangeNotSatisfiable("invalid or unsupported range", {"range": header[:100], "size": size})
    if not match[1]:  # suffix: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise oci.RangeNotSatisfiable("range not satisfiable", {"range": header[:100], "size": size})
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if start >= size or end < start:
        raise oci.RangeNotSatisfiable("range not satisfiable", {"range": header[:100], "size": size})
    return ByteRange(start, min(end, size - 1))


class FileSlice(io.RawIOBase):
    """A window of a file, readable in Python and sendable by the server with sendfile.

    Gunicorn's file wrapper sends `Content-Length` bytes from the descriptor's current
    offset, so the descriptor is positioned at the start of the window; servers without
    sendfile read it and stop at the window's end.
    """

    def __init__(self, path: Path, start: int, length: int):
        self._fd = os.open(path, os.O_RDONLY)
        os.lseek(self._fd, start, os.SEEK_SET)
        self._remaining = length

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self._remaining:
            size = self._remaining
        data = os.read(self._fd, size) if size else b""
        self._remaining -= len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # socket.sendfile repositions the file after sending; the window is spent by then.
        return os.lseek(self._fd, offset, whence)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def blob_hit_response(location: BlobLocation, size: int, range_header: str | None) -> HttpResponse:
    """A cached blob, sent the way its store allows. A local file goes without a Python loop
    over its bytes: handed to nginx with X-Accel-Redirect when MIRROR_X_ACCEL_REDIRECT is set
    (nginx then does ranges too), else sent by gunicorn with sendfile. A blob in object
    storage is a redirect to it (the client asks its range there), or streamed from it.
    FileNotFoundError when the blob went away since it was looked up."""
    if isinstance(location, Redirect):
        response = HttpResponse(status=307)
        response["Location"] = location.url
        response.blob_size = size  # what the client fetches elsewhere, for the statistics
        return response
    if isinstance(location, Streamed):
        return _window_response(location.open, size, parse_range(range_header, size))
    prefix = settings.MIRROR_X_ACCEL_REDIRECT
    if prefix:
        response = HttpResponse(content_type="application/octet-stream")
        response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + location.relative_path
        return response
    return blob_file_response(location.path, size, parse_range(range_header, size))


def blob_file_response(path: Path, size: int, byte_range: ByteRange | None) -> FileResponse:
    return _window_response(lambda start, length: FileSlice(path, start, length), size, byte_range)


def _window_response(
    open_window: Callable[[int, int], object], size: int, byte_range: ByteRange | None
) -> FileResponse:
    """The whole blob, or its range with 206: from a readable body `open_window(start, length)`."""
    window = byte_range or ByteRange(0, size - 1)
    response = FileResponse(
        open_window(window.start, max(window.length, 0)),
        status=206 if byte_range else 200,
        content_type="application/octet-stream",
    )
    response["Content-Length"] = str(max(window.length, 0))
    # Where sendfile cannot be used (TLS, servers without it), read in large blocks.
    response.block_size = 1024 * 1024
    if byte_range:
        response["Content-Range"] = f"bytes {window.start}-{window.end}/{size}"
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's last resort (handler500) for an exception that escaped every view: on /v2/ the
    registry's JSON error, elsewhere a plain page; the exception is logged, never shown."""
    if request.path.startswith("/v2/"):
        response = error_response(oci.RegistryError("internal error"), request.method)
        response[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        return secure_registry_response(response)
    return HttpResponse("Server error\n", status=500, content_type="text/plain")
