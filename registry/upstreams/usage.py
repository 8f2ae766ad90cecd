"""How much each upstream account is used, counted in memory and written in batches.

Every upstream request is counted for the account that made it (and announced with the
`upstream_request` signal, for statistics); manifest GETs are counted apart, as Docker Hub
counts them against the rate limit. Counts are kept in memory (registry.buffers) and added to
the account's row by the flush thread, with the pull times (every
MIRROR_PULL_TIME_FLUSH_INTERVAL seconds) and when a server worker exits, so no request waits
on a database write for them.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from registry.buffers import Tally, WriteBuffer
from registry.models import UpstreamAccount
from registry.signals import upstream_request

logger = logging.getLogger(__name__)

MAX_PENDING = 10_000  # accounts used since the last flush


def record(upstream_id: int, account_id: int, username: str, method: str, kind: str, outcome: str) -> None:
    pulled = 1 if method == "GET" and kind == "manifest" and outcome == "ok" else 0
    _buffer.add(lambda used: used.add(account_id, requests=1, pulls=pulled), account_id)
    try:
        upstream_request.send(
            sender=UpstreamAccount,
            upstream_id=upstream_id,
            account_id=account_id,
            username=username,
            method=method,
            kind=kind,
            outcome=outcome,
        )
    except Exception:  # a listener's failure never fails a pull
        logger.exception("upstream_request listener failed")


def flush() -> int:
    """Add the counts to the accounts now; on failure they are kept for the next flush."""
    return _buffer.flush()


def _write(used: Tally[int]) -> None:
    now = timezone.now()
    with transaction.atomic():  # all or nothing: kept counts are never added twice
        for account_id, counts in used:
            UpstreamAccount.objects.filter(pk=account_id).update(
                requests_made=F("requests_made") + counts["requests"],
                pulls_made=F("pulls_made") + counts["pulls"],
                last_used_at=now,
            )


_buffer: WriteBuffer[Tally[int]] = WriteBuffer(
    "account use",
    empty=Tally,
    write=_write,
    interval_setting="MIRROR_PULL_TIME_FLUSH_INTERVAL",
    max_pending=MAX_PENDING,
    what="accounts' counts",
    at_once_when_zero=True,
)
