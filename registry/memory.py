"""Answers a server process remembers, so hot manifests are served without the database.

Manifests by digest never change, so they are kept until memory runs short (LRU, bounded in
bytes) or for a few minutes, whichever comes first (garbage collection may evict them from
the cache meanwhile). Tags are kept only for what is left of their TTL, so a process never trusts a tag
longer than the database would let it. Every process has its own memory; nothing here is
needed for correctness, only for speed.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
import threading
import time
from typing import Generic, TypeVar

from cachetools import LRUCache

T = TypeVar("T")

_all_memories: list[AnswerMemory] = []


@dataclass(frozen=True)
class Remembered(Generic[T]):
    value: T
    size: int
    expires: float | None  # time.monotonic() deadline; None for immutable answers


class AnswerMemory(Generic[T]):
    def __init__(self, max_bytes: int):
        self._entries: LRUCache = LRUCache(maxsize=max(max_bytes, 1), getsizeof=lambda entry: entry.size)
        self._lock = threading.Lock()
        self.enabled = max_bytes > 0
        _all_memories.append(self)

    def get(self, key: Hashable) -> T | None:
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires is not None and entry.expires <= time.monotonic():
                del self._entries[key]
                return None
            return entry.value

    def put(self, key: Hashable, value: T, size: int, ttl: float | None = None) -> None:
        if not self.enabled or (ttl is not None and ttl <= 0):
            return
        entry = Remembered(value, size + 256, None if ttl is None else time.monotonic() + ttl)
        with self._lock:
            try:
                self._entries[key] = entry
            except ValueError:  # larger than the whole memory: not worth keeping
                pass

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def forget_all() -> None:
    """Drop everything every memory of this process holds (tests that edit the database)."""
    for memory in _all_memories:
        memory.clear()
