"""Last-pulled times, buffered so a busy mirror does not write the database on every hit.

Each process keeps the newest pull time per object and writes them in one UPDATE per model
at most every MIRROR_PULL_TIME_FLUSH_INTERVAL seconds. Eviction only needs minute precision,
and a crash loses at most one interval of times, never cached content.

Pulls of a tag are also counted per day in the same flush (TagPullCount): the most pulled
tags are kept fresh by the workers. Their own pulls (prefetch, refresh) run `uncounted()`, so
keeping a tag fresh never makes it look popular.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from registry import flushing
from registry.models import Tag, TagPullCount

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# model -> lookup field -> set of values pulled since the last flush
_pending: dict[type[models.Model], dict[str, set]] = defaultdict(lambda: defaultdict(set))
# tag pk -> pulls since the last flush
_tag_pulls: Counter[int] = Counter()
_last_flush = time.monotonic()
_counting: ContextVar[bool] = ContextVar("count_tag_pulls", default=True)


@contextmanager
def uncounted() -> Iterator[None]:
    """Pulls made inside are not client pulls: times are recorded, popularity is not."""
    token = _counting.set(False)
    try:
        yield
    finally:
        _counting.reset(token)


def record(model: type[models.Model], field: str, value: object) -> None:
    """Note that the object with `field == value` was pulled now."""
    with _lock:
        _pending[model][field].add(value)
        if model is Tag and field == "pk" and _counting.get():
            _tag_pulls[value] += 1
    if time.monotonic() - _last_flush >= settings.MIRROR_PULL_TIME_FLUSH_INTERVAL:
        flush()


def flush() -> None:
    """Write the buffered times; a failure is logged and the times are dropped, never raised."""
    global _last_flush
    with _lock:
        batch = {model: dict(fields) for model, fields in _pending.items()}
        _pending.clear()
        tag_pulls = dict(_tag_pulls)
        _tag_pulls.clear()
        _last_flush = time.monotonic()
    now = timezone.now()
    for model, fields in batch.items():
        for field, values in fields.items():
            try:
                model.objects.filter(**{f"{field}__in": list(values)}).update(last_pulled_at=now)
            except DatabaseError:
                logger.warning("could not record last-pulled times for %s", model.__name__, exc_info=True)
    for tag_id, pulls in tag_pulls.items():
        try:
            _add_tag_pulls(tag_id, now.date(), pulls)
        except DatabaseError:
            logger.warning("could not record pull counts", exc_info=True)


def _add_tag_pulls(tag_id: int, day, pulls: int) -> None:
    counts = TagPullCount.objects.filter(tag_id=tag_id, day=day)
    if counts.update(count=F("count") + pulls):
        return
    if not Tag.objects.filter(pk=tag_id).exists():
        return  # evicted since it was pulled
    try:
        with transaction.atomic():
            TagPullCount.objects.create(tag_id=tag_id, day=day, count=pulls)
    except IntegrityError:  # created meanwhile by another process, or the tag was evicted
        counts.update(count=F("count") + pulls)


# Flushed as requests come (above) and as a server process exits.
flushing.register("pull times", flush)
