"""How much each upstream account is used, counted in memory and written in batches.

Every upstream request is counted for the account that made it (and announced with the
`upstream_request` signal, for statistics); manifest GETs are counted apart, as Docker Hub
counts them against the rate limit. Counts are added to the account's row at most every
MIRROR_PULL_TIME_FLUSH_INTERVAL seconds and when a server worker exits, so no request waits
on a database write for them.
"""

from __future__ import annotations

from collections import Counter
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from registry import flushing
from registry.models import UpstreamAccount
from registry.signals import upstream_request

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_requests: Counter[int] = Counter()
_pulls: Counter[int] = Counter()
_last_flush = time.monotonic()


def record(upstream_id: int, account_id: int, username: str, method: str, kind: str, outcome: str) -> None:
    with _lock:
        _requests[account_id] += 1
        if method == "GET" and kind == "manifest" and outcome == "ok":
            _pulls[account_id] += 1
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
    if time.monotonic() - _last_flush >= settings.MIRROR_PULL_TIME_FLUSH_INTERVAL:
        flush()


def flush() -> None:
    """Write the counts; a failure is logged and the counts dropped, never raised."""
    global _last_flush
    with _lock:
        requests, pulls = dict(_requests), dict(_pulls)
        _requests.clear()
        _pulls.clear()
        _last_flush = time.monotonic()
    now = timezone.now()
    for account_id, count in requests.items():
        try:
            UpstreamAccount.objects.filter(pk=account_id).update(
                requests_made=F("requests_made") + count,
                pulls_made=F("pulls_made") + pulls.get(account_id, 0),
                last_used_at=now,
            )
        except DatabaseError:
            logger.warning("could not record the use of upstream account %s", account_id, exc_info=True)


# Flushed as requests come (above) and as a server process exits.
flushing.register("account use", flush)
