"""Last-pulled times, buffered so a busy mirror does not write the database on every hit.

Each process keeps the pulled objects in memory (registry.buffers) and its flush thread writes
them, one UPDATE per model, every MIRROR_PULL_TIME_FLUSH_INTERVAL seconds (0: as soon as they
are recorded, still off the request's thread), and as a server process exits. Eviction only
needs minute precision, and a crash loses at most one interval of times, never cached content.

Pulls of a tag are also counted per day in the same flush (TagPullCount): the most pulled
tags are kept fresh by the workers. Their own pulls (prefetch, refresh) run `uncounted()`, so
keeping a tag fresh never makes it look popular.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
import logging

from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from registry.buffers import Tally, WriteBuffer
from registry.models import Tag, TagPullCount

logger = logging.getLogger(__name__)

MAX_PENDING = 100_000  # objects pulled since the last flush (a database down for long must not grow a process)

# (model, lookup field, value) of each object pulled since the last flush -> its client pulls
PullKey = tuple[type[models.Model], str, object]
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
    key = (model, field, value)
    counted = 1 if model is Tag and field == "pk" and _counting.get() else 0
    _buffer.add(lambda pulled: pulled.add(key, pulls=counted), key)


def flush() -> int:
    """Write the buffered times and counts now; on failure they are kept for the next flush."""
    return _buffer.flush()


def _write(pulled: Tally[PullKey]) -> None:
    now = timezone.now()
    values: dict[tuple[type[models.Model], str], list] = defaultdict(list)
    for (model, field, value), _ in pulled:
        values[(model, field)].append(value)
    with transaction.atomic():  # all or nothing: kept counts are never added twice
        for (model, field), pulled_values in values.items():
            model.objects.filter(**{f"{field}__in": pulled_values}).update(last_pulled_at=now)
        for (model, _, tag_id), counts in pulled:
            if model is Tag and counts["pulls"]:
                _add_tag_pulls(tag_id, now.date(), counts["pulls"])


def _add_tag_pulls(tag_id: int, day: date, pulls: int) -> None:
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


_buffer: WriteBuffer[Tally[PullKey]] = WriteBuffer(
    "pull times",
    empty=Tally,
    write=_write,
    interval_setting="MIRROR_PULL_TIME_FLUSH_INTERVAL",
    max_pending=MAX_PENDING,
    what="pulled objects",
    at_once_when_zero=True,
)
