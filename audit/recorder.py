"""Recording pulls for the audit log, without a database write per request.

`recorded` wraps the manifest view (inside `stats.counted`, whose view of the request it
reads: the upstream, the repository and whether the upstream was used). Each request adds
one entry to this process's write buffer (registry.buffers: a lock and a list append, no
I/O); its flush thread writes it with one bulk INSERT every MIRROR_AUDIT_FLUSH_INTERVAL seconds,
and as a server process exits. Nothing here raises into a request: a record that cannot be
made is logged, a batch that cannot be saved is kept for the next flush, and past
MIRROR_AUDIT_BUFFER_MAX entries the newest are counted and dropped (a database down for
long must not grow a process without bound).

Blob requests are recorded only with MIRROR_AUDIT_BLOBS on (`recorded_blob`): a pull is
identified by its manifest request, and its layers multiply the rows by the number of layers;
but only blob reads show who read which layer (say, through another repository's name).
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import logging

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from access.clientaddress import client_address
from dashboard import stats
from registry.buffers import Records, WriteBuffer

from .models import PullRecord

logger = logging.getLogger(__name__)

DENIED_STATUSES = (401, 403)


def outcome_of(response: HttpResponse, used_upstream: bool) -> str:
    """What the answer was, in the log's words."""
    status = response.status_code
    if status in DENIED_STATUSES:
        return PullRecord.Outcome.DENIED
    if status == 404:
        return PullRecord.Outcome.NOT_FOUND
    if status >= 400:
        return PullRecord.Outcome.ERROR
    if "Stale" in response.get("Warning", ""):
        return PullRecord.Outcome.STALE
    return PullRecord.Outcome.MISS if used_upstream else PullRecord.Outcome.HIT


def entry(
    request: HttpRequest, name: str, reference: str, response: HttpResponse, kind: str = PullRecord.Kind.MANIFEST
) -> PullRecord:
    """The record of one manifest (or blob) request and its answer (not saved)."""
    state = stats.current()
    upstream = state.upstream if state is not None else None
    user = getattr(request, "registry_user", None)  # set by client authentication, when it ran
    address = client_address(request)
    return PullRecord(
        at=timezone.now(),
        user_id=getattr(user, "pk", None),
        username=(user.get_username() if user is not None else "")[:150],
        client_address=str(address) if address is not None else None,
        user_agent=request.headers.get("User-Agent", "")[:255],
        method=request.method[:8],
        kind=kind,
        upstream=upstream.name[:100] if upstream is not None else "",
        # The repository as cached (e.g. library/alpine); as asked when the request got no further.
        repository=((state.repository if state is not None else "") or name)[:255],
        reference=reference[:255],
        digest=response.get("Docker-Content-Digest", "")[:100] if response.status_code < 400 else "",
        outcome=outcome_of(response, state.used_upstream if state is not None else False),
        status=response.status_code,
    )


def add(record: PullRecord) -> None:
    _buffer.add(lambda records: records.append(record))


def recorded(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Record each request of the manifest view (`name`, `reference` from the URL)."""
    return _recording(view, PullRecord.Kind.MANIFEST, "reference", lambda: True)


def recorded_blob(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Record each request of the blob view (`name`, `digest` from the URL) when
    MIRROR_AUDIT_BLOBS is on."""
    return _recording(view, PullRecord.Kind.BLOB, "digest", lambda: settings.MIRROR_AUDIT_BLOBS)


def _recording(
    view: Callable[..., HttpResponse], kind: str, reference_key: str, wanted: Callable[[], bool]
) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def endpoint(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if settings.MIRROR_AUDIT_ENABLED and wanted():
            try:
                add(entry(request, kwargs.get("name", ""), kwargs.get(reference_key, ""), response, kind))
            except Exception:
                logger.exception("could not record a pull for the audit log")
        return response

    return endpoint


def take() -> tuple[list[PullRecord], int]:
    """What this process recorded since the last take (and how many it dropped)."""
    return _buffer.take()


def put_back(records: list[PullRecord]) -> None:
    """Records that could not be saved go out with the next flush (the oldest first), within the cap."""
    _buffer.put_back(Records(records))


def flush() -> int:
    """Write the buffered records in one batch; on failure keep them. Returns how many were written."""
    return _buffer.flush()


def _write(records: Records) -> None:
    with transaction.atomic():  # all or nothing: a batch kept for later is never half saved
        PullRecord.objects.bulk_create(records, batch_size=500)


_buffer: WriteBuffer[Records] = WriteBuffer(
    "audit log",
    empty=Records,
    write=_write,
    interval_setting="MIRROR_AUDIT_FLUSH_INTERVAL",
    max_pending=lambda: settings.MIRROR_AUDIT_BUFFER_MAX,
    what="pull records",
)
