"""Last-pulled times, buffered so a busy mirror does not write the database on every hit.

Each process keeps the newest pull time per object and writes them in one UPDATE per model
at most every MIRROR_PULL_TIME_FLUSH_INTERVAL seconds. Eviction only needs minute precision,
and a crash loses at most one interval of times, never cached content.
"""
from __future__ import annotations

from collections import defaultdict
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, models
from django.utils import timezone

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# model -> lookup field -> set of values pulled since the last flush
_pending: dict[type[models.Model], dict[str, set]] = defaultdict(lambda: defaultdict(set))
_last_flush = time.monotonic()


def record(model: type[models.Model], field: str, value: object) -> None:
    """Note that the object with `field == value` was pulled now."""
    with _lock:
        _pending[model][field].add(value)
    if time.monotonic() - _last_flush >= settings.MIRROR_PULL_TIME_FLUSH_INTERVAL:
        flush()


def flush() -> None:
    """Write the buffered times; a failure is logged and the times are dropped, never raised."""
    global _last_flush
    with _lock:
        batch = {model: dict(fields) for model, fields in _pending.items()}
        _pending.clear()
        _last_flush = time.monotonic()
    now = timezone.now()
    for model, fields in batch.items():
        for field, values in fields.items():
            try:
                model.objects.filter(**{f"{field}__in": list(values)}).update(last_pulled_at=now)
            except DatabaseError:
                logger.warning("could not record last-pulled times for %s", model.__name__, exc_info=True)
