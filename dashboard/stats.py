"""Recording statistics on the pull path, without a database write per request.

Each process adds to a batch in its own memory, a write buffer (registry.buffers: a lock and a
few dict updates per request, no I/O). Its flush thread writes the batch every
MIRROR_STATS_FLUSH_INTERVAL seconds: into Redis counters when MIRROR_STATS_REDIS_URL is set (a
Celery beat task moves them into the database), straight into the hourly buckets otherwise;
server processes also flush when they exit. A crash loses at most one interval. Nothing here
ever raises into a request: a failure to record is logged, a failure to flush keeps the batch
for the next try, and past MAX_PENDING keys new ones are dropped (and counted in the log).

What the pull path tells:
- `counted(kind)` wraps a /v2/ view and records its outcome (hit, miss, stale, error), the
  bytes sent (a streamed miss when its stream ends) and, for a manifest by tag, a pull;
- `target(upstream, repository)` and `upstream_used(...)` come from the cache: what a request
  is about, and that it had to fetch content from the upstream (with the bytes downloaded);
- `upstream_call(...)` comes from the upstream client: every request, its answer and latency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
import functools
import json
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

from registry import signals
from registry.buffers import WriteBuffer

from .batch import Batch, CallKey, CounterKey

if TYPE_CHECKING:
    from registry.models import Upstream

logger = logging.getLogger(__name__)

MANIFEST, BLOB = signals.MANIFEST, signals.BLOB  # what a request was about, as registry names it
MISMATCH_CODES = {"DIGEST_INVALID", "MANIFEST_INVALID"}
MAX_PENDING = 100_000  # counter and call keys held between flushes (hours x repositories x accounts...)


# --- the buffer -------------------------------------------------------------------------------
def _never_raises(record: Callable[..., None]) -> Callable[..., None]:
    """Statistics must never break what is being counted: a failure to record is logged."""

    @functools.wraps(record)
    def guarded(*args, **kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            logger.exception("could not record statistics")

    return guarded


def _apply(change: Callable[[Batch], None], key: CounterKey | CallKey | None) -> None:
    _buffer.add(change, key)  # never raises


def take() -> Batch:
    """What this process recorded since the last take, leaving an empty buffer."""
    return _buffer.take()[0]


def put_back(batch: Batch) -> None:
    """A batch that could not be saved: it goes out again with the next flush."""
    _buffer.put_back(batch)


def _hour(now: float) -> float:
    return now - now % 3600


def _count(upstream: str, repository: str, account: str, kind: str, **amounts: int) -> None:
    key = CounterKey(_hour(time.time()), upstream, repository, account, kind)
    _apply(lambda batch: batch.count(key, **amounts), key)


def _event(kind: str, message: str, *, upstream: str = "", account: str = "", repository: str = "") -> None:
    event = {
        "at": time.time(),
        "kind": kind,
        "upstream": upstream,
        "account": account,
        "repository": repository,
        "message": message[:500],
    }
    _apply(lambda batch: batch.event(event), None)


def account_in_use(upstream: Upstream) -> str:
    """The username the mirror pulls from this upstream with ("" is anonymous)."""
    try:
        from registry.proxy.upstream_calls import upstream_client

        return upstream_client(upstream).username or ""
    except Exception:
        logger.debug("no upstream account for %s", upstream, exc_info=True)
        return ""


# --- what the cache tells ---------------------------------------------------------------------
@dataclass
class _Request:
    kind: str
    upstream: Upstream | None = None
    repository: str = ""
    used_upstream: bool = False


_current: ContextVar[_Request | None] = ContextVar("dashboard_request", default=None)


def current() -> _Request | None:
    """What the cache told about the request being answered (inside `counted`), if any."""
    return _current.get()


@_never_raises
def target(upstream: Upstream, repository: str) -> None:
    """The request being answered is about this repository of this upstream."""
    state = _current.get()
    if state is not None:
        state.upstream, state.repository = upstream, repository


@_never_raises
def upstream_used(upstream: Upstream, repository: str, kind: str, downloaded: int = 0) -> None:
    """Content was fetched from the upstream (a manifest GET, a blob fill, a blob HEAD for a
    blob not cached): the request being answered, if any, is a miss."""
    state = _current.get()
    if state is not None:
        state.used_upstream = True
    if downloaded:
        _count(upstream.name, repository, account_in_use(upstream), kind, bytes_from_upstream=downloaded)


# --- what the upstream client tells ------------------------------------------------------------
@_never_raises
def upstream_call(
    upstream_url: str, account: str, method: str, url: str, status: int | None, seconds: float, error: str = ""
) -> None:
    """One request an upstream client made (to `url`: the upstream, or where it redirected),
    answered with `status` or not at all. A failure (no answer, 5xx, 429) is also an event."""
    key = CallKey(upstream_url, account, str(status) if status else "error")
    _apply(lambda batch: batch.call(key, seconds), key)
    if status is None or status >= 500 or status == 429:
        outcome = error or (f"answered {status}" if status else "no answer")
        _event("upstream_error", f"{method} {urlsplit(url).path}: {outcome}", upstream=upstream_url, account=account)


# --- what a /v2/ view did -----------------------------------------------------------------------
def counted(kind: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Record each request of a manifest or blob view: outcome, bytes, pulls."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def endpoint(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            token = _current.set(_Request(kind))
            try:
                response = view(request, *args, **kwargs)
                state = _current.get()
            finally:
                _current.reset(token)
            try:
                _finish(state, request, kwargs, response)
            except Exception:
                logger.exception("could not record statistics")
            return response

        return endpoint

    return decorate


def _finish(state: _Request, request: HttpRequest, kwargs: dict, response: HttpResponse) -> None:
    upstream = state.upstream
    where = {
        "upstream": upstream.name if upstream is not None else "",
        "repository": state.repository,
        "account": account_in_use(upstream) if upstream is not None else "",
        "kind": state.kind,
    }
    if response.status_code >= 400:
        _count(**where, requests=1, errors=1)
        if response.status_code == 502:
            _bad_upstream_content(where, response)
        return
    if isinstance(response, StreamingHttpResponse) and not isinstance(response, FileResponse):
        # A miss following its fill: what was sent is known when the stream ends.
        response.streaming_content = _CountingStream(response.streaming_content, where)
        return
    if "Stale" in response.get("Warning", ""):
        outcome = "stale"
    else:
        outcome = "misses" if state.used_upstream else "hits"
    sent = 0 if request.method == "HEAD" else _body_size(request, kwargs, response)
    by_tag = state.kind == MANIFEST and ":" not in kwargs.get("reference", ":")
    _count(
        **where,
        requests=1,
        **{outcome: 1},
        bytes_served=sent,
        bytes_from_cache=sent if outcome != "misses" else 0,
        pulls=1 if by_tag else 0,
    )


def _body_size(request: HttpRequest, kwargs: dict, response: HttpResponse) -> int:
    if isinstance(response, FileResponse):  # sent with sendfile: its length is what goes out
        return int(response.get("Content-Length") or 0)
    if response.has_header("X-Accel-Redirect"):  # nginx sends the file (and does ranges)
        return _blob_size(kwargs.get("digest", ""), request.headers.get("Range"))
    if hasattr(response, "blob_size"):  # redirected to object storage, which sends it
        return _window_size(response.blob_size, request.headers.get("Range"))
    return len(response.content)


def _blob_size(digest: str, range_header: str | None) -> int:
    from registry import oci
    from registry.storage import default_store

    try:
        size = default_store().size(oci.parse_digest(digest)) or 0
    except oci.RegistryError:
        return 0
    return _window_size(size, range_header)


def _window_size(size: int, range_header: str | None) -> int:
    from registry import oci
    from registry.api.responses import parse_range

    try:
        window = parse_range(range_header, size)
    except oci.RegistryError:
        return 0
    return window.length if window else size


def _bad_upstream_content(where: dict, response: HttpResponse) -> None:
    try:
        error = json.loads(response.content)["errors"][0]
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        code, message = "", "the upstream sent unusable content"
    kind = "digest_mismatch" if code in MISMATCH_CODES and "match" in message else "upstream_error"
    _event(
        kind,
        f"{where['repository']}: {message}",
        upstream=where["upstream"],
        account=where["account"],
        repository=where["repository"],
    )


class _CountingStream:
    """A streamed miss: counts the bytes sent and records the request when the stream ends
    (finished, cut by an upstream failure, or closed because the client went away)."""

    def __init__(self, chunks: Iterator[bytes], where: dict):
        self._chunks = iter(chunks)
        self._where = where
        self._sent = 0
        self._done = False

    def __iter__(self) -> _CountingStream:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._end(None)
            raise
        except Exception as error:
            self._end(error)
            raise
        self._sent += len(chunk)
        return chunk

    def close(self) -> None:
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        if self._done:
            return
        self._done = True
        where = self._where
        if error is None:
            _count(**where, requests=1, misses=1, bytes_served=self._sent)
            return
        _count(**where, requests=1, errors=1, bytes_served=self._sent)
        from registry.proxy.fills import UpstreamDigestMismatch

        kind = "digest_mismatch" if isinstance(error, UpstreamDigestMismatch) else "upstream_error"
        message = getattr(error, "message", None) or type(error).__name__
        _event(
            kind,
            f"{where['repository']}: {message}",
            upstream=where["upstream"],
            account=where["account"],
            repository=where["repository"],
        )


# --- flushing ------------------------------------------------------------------------------------
def flush() -> int:
    """Send what this process recorded to Redis, or to the database; on failure keep it."""
    return _buffer.flush()


def _write(batch: Batch) -> None:
    from . import redisbuffer, store

    if settings.MIRROR_STATS_REDIS_URL:
        try:
            redisbuffer.push(batch)
            return
        except Exception as error:  # Redis is down: the database will do
            logger.warning("could not send statistics to Redis (%s); writing them to the database", error)
    store.write(batch)  # raises if it could not: the buffer keeps the batch


def flush_shared() -> None:
    """Move the counters every process sent to Redis into the database (the beat task)."""
    from . import redisbuffer, store

    if not settings.MIRROR_STATS_REDIS_URL:
        return
    try:
        batch = redisbuffer.drain()
    except Exception as error:  # Redis is down: each process writes its own to the database meanwhile
        logger.warning("could not read statistics from Redis: %s", error)
        return
    if not batch:
        return
    try:
        store.write(batch)
    except Exception:
        redisbuffer.push(batch)  # drained but not saved: back where it came from
        raise


_buffer: WriteBuffer[Batch] = WriteBuffer(
    "statistics",
    empty=Batch,
    write=_write,
    interval_setting="MIRROR_STATS_FLUSH_INTERVAL",  # server processes start its thread
    max_pending=MAX_PENDING,
    what="statistics entries",
)


# --- receivers of registry's signals (connected in DashboardConfig.ready) --------------------------
def on_repository_targeted(sender, *, upstream: Upstream, repository: str, **_) -> None:
    target(upstream, repository)


def on_upstream_fetched(sender, *, upstream: Upstream, repository: str, kind: str, downloaded: int, **_) -> None:
    upstream_used(upstream, repository, kind, downloaded)


def on_upstream_called(
    sender,
    *,
    upstream_url: str,
    account: str,
    method: str,
    url: str,
    status: int | None,
    seconds: float,
    error: str,
    **_,
) -> None:
    upstream_call(upstream_url, account, method, url, status, seconds, error)
