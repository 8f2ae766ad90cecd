"""A write buffer: what the pull path records, kept in a process's memory and written in
batches by its flush thread (registry.flushing), so no request waits on a database write.

One policy for every buffer (statistics, audit records, pull times, account use):
- adding is cheap and thread-safe (a lock and a few dict or list operations, no I/O), and never
  raises: a failure to record is logged;
- only the buffer's flush thread writes (every `interval_setting` seconds), and `flush_all()` as a
  server process exits, so a clean stop writes everything and a crash loses at most one interval;
- it is bounded: past `max_pending` entries (records, or keys of counters), new entries are
  dropped and counted, and the count is logged once per flush, not once per request;
- a failed write puts back what it took (within the bound), for the next flush to try again;
  the failure is logged and never reaches a request.

What a buffer accumulates is its own (`Pending`): a list of records (`Records`), counters by
key (`Tally`), or the statistics' batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator
import logging
import threading
import time
from typing import Generic, Protocol, Self, TypeVar

from django.conf import settings

from registry import flushing

logger = logging.getLogger(__name__)


class Pending(Protocol):
    """What a buffer accumulates between two flushes."""

    def __len__(self) -> int:
        """The entries held, as the bound counts them (records, or keys)."""
        ...

    def holds(self, key: Hashable | None) -> bool:
        """Whether an entry under `key` would add to one already held (and so grow nothing)."""
        ...

    def take_back(self, older: Self, room: int) -> int:
        """Add `older` (taken before what is held, and not written) with at most `room` more
        entries; return how many of its entries were left out."""
        ...


P = TypeVar("P", bound=Pending)
K = TypeVar("K", bound=Hashable)


class WriteBuffer(Generic[P]):
    """One buffer of one process, flushed by registry.flushing under `name`.

    `write` saves what was taken, all of it or nothing (it raises if it could not); `what` names
    the entries in the log ("pull records"). `max_pending` is a number, or a function reading
    the setting that says it. `at_once_when_zero`: with the interval at 0, the flush thread writes
    as soon as something is added, rather than only at exit.
    """

    def __init__(
        self,
        name: str,
        *,
        empty: Callable[[], P],
        write: Callable[[P], object],
        interval_setting: str | None,
        max_pending: int | Callable[[], int],
        what: str = "entries",
        at_once_when_zero: bool = False,
    ):
        self.name = name
        self.what = what
        self._empty = empty
        self._write = write
        self._max_pending = max_pending
        self._interval_setting = interval_setting
        self._lock = threading.Lock()  # guards the pending entries and the drop count
        self._flushing = threading.Lock()  # one flush at a time: a put-back never races a take
        self._pending = empty()
        self._dropped = 0
        self._added = threading.Event() if at_once_when_zero else None
        self._quiet_until = 0.0  # after a failed write, adds do not wake the thread (it retries by itself)
        flushing.register(name, self.flush, interval_setting, wakeup=self._added)

    def max_pending(self) -> int:
        return self._max_pending() if callable(self._max_pending) else self._max_pending

    def add(self, change: Callable[[P], None], key: Hashable | None = None) -> None:
        """Apply `change` to the pending entries; `key` names the entry it adds to (None: a new
        one each time). Past the bound, a change that would add an entry is dropped and counted."""
        try:
            with self._lock:
                if len(self._pending) >= self.max_pending() and not self._pending.holds(key):
                    self._dropped += 1
                    return
                change(self._pending)
            if self._added is not None and time.monotonic() >= self._quiet_until and self._flushes_at_once():
                self._added.set()
        except Exception:
            logger.exception("could not buffer an entry for the %s", self.name)

    def take(self) -> tuple[P, int]:
        """What was added since the last take, and how many were dropped; the buffer is left empty."""
        with self._lock:
            taken, dropped = self._pending, self._dropped
            self._pending, self._dropped = self._empty(), 0
        return taken, dropped

    def put_back(self, taken: P) -> None:
        """Entries that could not be written go out with the next flush (before what came since),
        as far as the bound leaves room."""
        with self._lock:
            room = max(self.max_pending() - len(self._pending), 0)  # what came since stays
            self._dropped += self._pending.take_back(taken, room)

    def flush(self) -> int:
        """Write what is pending; on failure keep it for the next flush. Never raises; returns
        how many entries were written."""
        with self._flushing:
            taken, dropped = self.take()
            if dropped:
                logger.warning("%s: %d %s dropped (the buffer was full)", self.name, dropped, self.what)
            if not taken:  # (a batch knows whether it holds anything)
                return 0
            try:
                self._write(taken)
            except Exception as error:
                logger.warning(
                    "could not save %d %s of the %s (%s); keeping them for the next flush",
                    len(taken),
                    self.what,
                    self.name,
                    error,
                )
                self.put_back(taken)
                self._quiet_until = time.monotonic() + flushing.RETRY_SECONDS
                return 0
            return len(taken)

    def _flushes_at_once(self) -> bool:
        return not self._interval_setting or not float(getattr(settings, self._interval_setting, 0) or 0)


class Records(list):
    """Records in the order they came; each is an entry of its own."""

    def holds(self, key: Hashable | None) -> bool:
        return False

    def take_back(self, older: Records, room: int) -> int:
        kept = older[:room]
        self[:0] = kept
        return len(older) - len(kept)


class Tally(Generic[K]):
    """Counters by key (an account, a pulled object): a key seen again adds to its counts."""

    def __init__(self) -> None:
        self.counts: dict[K, Counter[str]] = {}

    def __len__(self) -> int:
        return len(self.counts)

    def __iter__(self) -> Iterator[tuple[K, Counter[str]]]:
        return iter(self.counts.items())

    def holds(self, key: Hashable | None) -> bool:
        return key in self.counts

    def add(self, key: K, **amounts: int) -> None:
        counter = self.counts.setdefault(key, Counter())
        for name, amount in amounts.items():
            if amount:
                counter[name] += amount

    def take_back(self, older: Tally[K], room: int) -> int:
        left_out = 0
        for key, counter in older.counts.items():
            if key not in self.counts:
                if room <= 0:
                    left_out += 1
                    continue
                room -= 1
            self.add(key, **counter)
        return left_out
