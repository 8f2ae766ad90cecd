"""Buffers written in batches: each process keeps what the pull path recorded in memory, and
this writes it out, so no request waits on a database write.

A buffer (registry.buffers.WriteBuffer) registers its flush (at import) with the setting that
says how often it runs. Server processes (gunicorn workers, Celery worker processes) call
`start()` once they run: one daemon thread per buffer flushes it every interval (or, given a
`wakeup` event and an interval of 0, each time the event is set). They call `flush_all()` as
they exit, so a clean stop loses nothing and a crash at most one interval. A flush must keep
(or drop, and log) what it cannot write; a failing flush is logged here and never stops the
thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import logging
import os
import threading
import time

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # a buffer written at once (interval 0, woken) retries what it kept this often


@dataclass(frozen=True)
class Buffer:
    name: str
    flush: Callable[[], object]
    interval_setting: str | None  # seconds between flushes; None or 0: only at exit
    wakeup: threading.Event | None = None  # with an interval of 0: flush each time it is set

    def interval(self) -> float:
        return float(getattr(settings, self.interval_setting, 0) or 0) if self.interval_setting else 0.0


_buffers: dict[str, Buffer] = {}
_started_in: set[tuple[int, str]] = set()  # (pid, buffer) whose thread runs
_lock = threading.Lock()


def register(
    name: str,
    flush: Callable[[], object],
    interval_setting: str | None = None,
    wakeup: threading.Event | None = None,
) -> None:
    """Flush `flush` every `settings.<interval_setting>` seconds once started (0: only at exit,
    or whenever `wakeup` is set if given)."""
    with _lock:
        _buffers[name] = Buffer(name, flush, interval_setting, wakeup)


def start() -> None:
    """Start this process's flush threads (once per process: a forked child starts its own)."""
    pid = os.getpid()
    with _lock:
        for buffer in _buffers.values():
            interval = buffer.interval()
            if (interval <= 0 and buffer.wakeup is None) or (pid, buffer.name) in _started_in:
                continue
            _started_in.add((pid, buffer.name))
            threading.Thread(
                target=_flush_forever, args=(buffer, interval), name=f"flush-{buffer.name}", daemon=True
            ).start()


def flush_all() -> None:
    """Write every buffer now (a process about to exit); one failing never stops the others."""
    for buffer in list(_buffers.values()):
        _flush_once(buffer)


def _flush_once(buffer: Buffer) -> None:
    try:
        buffer.flush()
    except Exception:
        logger.exception("flushing %s failed", buffer.name)


def _flush_forever(buffer: Buffer, interval: float) -> None:
    while True:
        if interval > 0:
            time.sleep(interval)
        else:  # woken by what was added: written at once, still off the request's thread
            buffer.wakeup.wait(timeout=RETRY_SECONDS)  # and what a failed write put back, retried
            buffer.wakeup.clear()
        try:
            close_old_connections()  # a connection broken since the last flush is reopened
        except Exception:
            logger.exception("could not reset database connections before flushing %s", buffer.name)
        _flush_once(buffer)
