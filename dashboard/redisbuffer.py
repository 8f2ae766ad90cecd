"""Statistics shared through Redis: every process adds its batches to the same counters
(HINCRBY), and the beat task drains them into the database.

Draining reads and deletes in one MULTI/EXEC, so two drains never take the same counts; a
drain whose database write fails pushes the counts back. Only flush threads and the beat task
talk to Redis, never a request, through the process's client (registry.redisclients: short
timeouts; while Redis is known down it is not asked).
"""

from __future__ import annotations

from django.conf import settings

from registry import redisclients

from .batch import Batch

MAX_QUEUED_EVENTS = 1000  # events waiting in Redis for the next drain; older ones go


def key(name: str) -> str:
    return f"{settings.MIRROR_REDIS_KEY_PREFIX}mirrorsite:stats:{name}"


def push(batch: Batch) -> None:
    """Add the batch to the shared counters (RedisError when Redis is unavailable: the caller
    keeps or writes the batch elsewhere)."""
    with redisclients.guarded(settings.MIRROR_STATS_REDIS_URL) as client:
        _push(client, batch)


def _push(client, batch: Batch) -> None:
    pipe = client.pipeline(transaction=True)  # all of the batch, or none of it
    for field, amount in batch.counter_fields().items():
        pipe.hincrby(key("counters"), field, amount)
    for field, amount in batch.call_fields().items():
        pipe.hincrby(key("calls"), field, amount)
    events = batch.event_items()
    if events:
        pipe.rpush(key("events"), *events)
        pipe.ltrim(key("events"), -MAX_QUEUED_EVENTS, -1)
    if batch.dropped_events:
        pipe.incrby(key("dropped_events"), batch.dropped_events)
    pipe.execute()


def drain() -> Batch:
    with redisclients.guarded(settings.MIRROR_STATS_REDIS_URL) as client:
        return _drain(client)


def _drain(client) -> Batch:
    pipe = client.pipeline(transaction=True)
    for name in ("counters", "calls"):
        pipe.hgetall(key(name))
        pipe.delete(key(name))
    pipe.lrange(key("events"), 0, -1)
    pipe.delete(key("events"))
    pipe.getdel(key("dropped_events"))
    counters, _, calls, _, events, _, dropped = pipe.execute()
    return Batch.from_fields(counters, calls, events, int(dropped or 0))
