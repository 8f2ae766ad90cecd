"""Statistics shared through Redis: every process adds its batches to the same counters
(HINCRBY), and the beat task drains them into the database.

Draining reads and deletes in one MULTI/EXEC, so two drains never take the same counts; a
drain whose database write fails pushes the counts back. Only flush threads and the beat task
talk to Redis, never a request, and with short timeouts.
"""
from __future__ import annotations

import threading

from django.conf import settings

from .batch import Batch

SOCKET_TIMEOUT = 2.0
MAX_QUEUED_EVENTS = 1000  # events waiting in Redis for the next drain; older ones go

_client = None
_client_url = ""
_client_lock = threading.Lock()


def client():
    global _client, _client_url
    url = settings.MIRROR_STATS_REDIS_URL
    with _client_lock:
        if _client is None or _client_url != url:
            import redis

            _client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
            _client_url = url
        return _client


def key(name: str) -> str:
    return f"{settings.MIRROR_REDIS_KEY_PREFIX}mirrorsite:stats:{name}"


def push(batch: Batch) -> None:
    pipe = client().pipeline(transaction=True)  # all of the batch, or none of it
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
    pipe = client().pipeline(transaction=True)
    for name in ("counters", "calls"):
        pipe.hgetall(key(name))
        pipe.delete(key(name))
    pipe.lrange(key("events"), 0, -1)
    pipe.delete(key("events"))
    pipe.getdel(key("dropped_events"))
    counters, _, calls, _, events, _, dropped = pipe.execute()
    return Batch.from_fields(counters, calls, events, int(dropped or 0))
