"""A batch of statistics: what a process recorded since its last flush, or what was drained
from Redis. Batches merge (counters add, latest times win) and flatten into Redis fields, so
the same batch goes to the database whichever way it travelled. A batch is what the
statistics' write buffer accumulates (registry.buffers.Pending): its counters and calls are
the entries the buffer's bound counts; events are capped by the batch itself.

Upstreams are named by their `Upstream.name`, or by URL where only the URL is known (the
upstream client); the database writer resolves URLs to names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import json
from typing import NamedTuple

# Upper bounds (seconds) of the upstream latency histogram; one more bucket counts the rest.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_EVENTS = 200  # per batch: an upstream outage must not turn into a flood of rows


class CounterKey(NamedTuple):
    hour: float  # epoch seconds of the hour's start (UTC)
    upstream: str
    repository: str
    account: str
    kind: str


class CallKey(NamedTuple):
    upstream: str
    account: str
    status: str  # "200", "503", or "error" when no answer came


@dataclass
class CallStats:
    count: int = 0
    micros: int = 0  # summed latency, in integers so Redis can add it
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def add(self, seconds: float) -> None:
        self.count += 1
        self.micros += int(seconds * 1_000_000)
        self.buckets[bucket_index(seconds)] += 1

    def merge(self, other: CallStats) -> None:
        self.count += other.count
        self.micros += other.micros
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


def bucket_index(seconds: float) -> int:
    for index, bound in enumerate(LATENCY_BUCKETS):
        if seconds <= bound:
            return index
    return len(LATENCY_BUCKETS)


@dataclass
class Batch:
    counters: dict[CounterKey, Counter[str]] = field(default_factory=dict)
    calls: dict[CallKey, CallStats] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    dropped_events: int = 0

    def __bool__(self) -> bool:
        return bool(self.counters or self.calls or self.events or self.dropped_events)

    def __len__(self) -> int:
        return len(self.counters) + len(self.calls) + len(self.events)

    def holds(self, key: CounterKey | CallKey | None) -> bool:
        """Whether recording under `key` needs no room in the buffer: its counters are already
        held, or it is an event (None), which the batch caps itself."""
        return key is None or key in self.counters or key in self.calls

    # --- recording -------------------------------------------------------------------------
    def count(self, key: CounterKey, **amounts: int) -> None:
        counter = self.counters.setdefault(key, Counter())
        for name, amount in amounts.items():
            if amount:
                counter[name] += amount

    def call(self, key: CallKey, seconds: float) -> None:
        self.calls.setdefault(key, CallStats()).add(seconds)

    def event(self, event: dict) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.dropped_events += 1
        else:
            self.events.append(event)

    def take_back(self, older: Batch, room: int) -> int:
        """Add a batch that could not be saved, with at most `room` keys not held already;
        returns how many keys were left out."""
        left_out = 0
        for entries, merge in ((older.counters, self._merge_counter), (older.calls, self._merge_call)):
            for key, value in entries.items():
                if not self.holds(key):
                    if room <= 0:
                        left_out += 1
                        continue
                    room -= 1
                merge(key, value)
        for event in older.events:
            self.event(event)
        self.dropped_events += older.dropped_events
        return left_out

    def _merge_counter(self, key: CounterKey, counter: Counter[str]) -> None:
        self.counters.setdefault(key, Counter()).update(counter)

    def _merge_call(self, key: CallKey, stats: CallStats) -> None:
        self.calls.setdefault(key, CallStats()).merge(stats)

    # --- Redis form: hash fields to add (counters, calls), list items (events) ---------------
    def counter_fields(self) -> dict[str, int]:
        return {
            json.dumps([*key, name]): amount
            for key, counter in self.counters.items()
            for name, amount in counter.items()
            if amount
        }

    def call_fields(self) -> dict[str, int]:
        fields = {}
        for key, stats in self.calls.items():
            fields[json.dumps([*key, "count"])] = stats.count
            fields[json.dumps([*key, "micros"])] = stats.micros
            for index, amount in enumerate(stats.buckets):
                if amount:
                    fields[json.dumps([*key, f"b{index}"])] = amount
        return fields

    def event_items(self) -> list[str]:
        return [json.dumps(event) for event in self.events]

    @classmethod
    def from_fields(cls, counters: dict, calls: dict, events: list, dropped_events: int = 0) -> Batch:
        """The inverse of the *_fields methods (Redis answers bytes; both are accepted)."""
        batch = cls(dropped_events=dropped_events)
        for raw, amount in counters.items():
            *key, name = json.loads(raw)
            batch.count(CounterKey(*key), **{name: int(amount)})
        for raw, amount in calls.items():
            *key, name = json.loads(raw)
            stats = batch.calls.setdefault(CallKey(*key), CallStats())
            if name == "count":
                stats.count += int(amount)
            elif name == "micros":
                stats.micros += int(amount)
            else:
                stats.buckets[int(name[1:])] += int(amount)
        for item in events:
            batch.event(json.loads(item))
        return batch
