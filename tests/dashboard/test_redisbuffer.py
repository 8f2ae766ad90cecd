"""Statistics shared through the machine's Redis: processes add to the same counters, one
drain takes them all (once), and a failed database write puts them back."""

from __future__ import annotations

from collections.abc import Iterator
import time

from django.db import DatabaseError
import pytest

from dashboard import batch as batches
from dashboard import redisbuffer, stats, store
from dashboard.batch import Batch, CallKey, CounterKey
from dashboard.models import HourlyStat, UpstreamEvent
from tests.support.celery_worker import forget_keys, redis_broker

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared(settings) -> Iterator[None]:
    url, prefix = redis_broker()  # fails, never skips, when Redis does not answer
    settings.MIRROR_STATS_REDIS_URL = url
    settings.MIRROR_REDIS_KEY_PREFIX = prefix
    yield
    forget_keys(url, prefix)


def a_batch(requests: int, seconds: float = 0.2) -> Batch:
    batch = Batch()
    now = time.time()
    hour = now - now % 3600
    batch.count(CounterKey(hour, "hub", "library/a", "bot", "manifest"), requests=requests, hits=requests)
    batch.call(CallKey("https://hub.example", "bot", "200"), seconds)
    batch.event({"at": time.time(), "kind": "digest_mismatch", "upstream": "hub", "message": f"after {requests}"})
    return batch


def test_batches_of_several_processes_add_up_and_drain_once(shared):
    redisbuffer.push(a_batch(2))
    redisbuffer.push(a_batch(3, seconds=12.0))
    drained = redisbuffer.drain()
    (counter,) = drained.counters.values()
    assert counter == {"requests": 5, "hits": 5}
    (calls,) = drained.calls.values()
    assert calls.count == 2 and calls.micros == 12_200_000
    assert calls.buckets[batches.bucket_index(0.2)] == 1 and calls.buckets[batches.bucket_index(12.0)] == 1
    assert [event["message"] for event in drained.events] == ["after 2", "after 3"]
    assert not redisbuffer.drain(), "a drain takes everything, once"


def test_flush_goes_to_redis_and_the_beat_task_moves_it_to_the_database(shared):
    stats.put_back(a_batch(4))
    stats.flush()
    assert not HourlyStat.objects.exists(), "only Redis holds it until the shared flush"
    stats.flush_shared()
    assert HourlyStat.objects.get().requests == 4
    assert UpstreamEvent.objects.get().kind == "digest_mismatch"


def test_a_database_failure_puts_the_drained_counts_back(shared, monkeypatch):
    redisbuffer.push(a_batch(6))

    def failing(batch):
        raise DatabaseError("database unavailable")

    monkeypatch.setattr(store, "write", failing)
    with pytest.raises(DatabaseError):
        stats.flush_shared()
    monkeypatch.undo()
    stats.flush_shared()
    assert HourlyStat.objects.get().requests == 6


def test_the_batch_survives_the_trip_through_redis_fields():
    original = a_batch(7)
    again = Batch.from_fields(original.counter_fields(), original.call_fields(), original.event_items())
    assert again.counters == original.counters
    assert again.calls == original.calls
    assert again.events == original.events
