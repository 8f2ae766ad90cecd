"""Named locks shared by every process (and, through Redis, every replica) of the mirror.

Single-flight needs one owner per blob fill and per tag revalidation. With REDIS_URL set the
locks live in Redis (expiring, so a dead owner frees them); on the embedded default they are
`flock` locks on files under MIRROR_DATA_DIR/tmp/locks (the kernel frees them when the
owning process dies).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
import threading
import time
from typing import Protocol

from django.conf import settings

POLL_INTERVAL = 0.02


class Lock(Protocol):
    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...
    def keep_alive(self) -> None: ...


class FileLock:
    """An exclusive flock on a per-name file, removed on release.

    Removing the file on release is safe because an acquirer checks, after locking, that the
    path still names the file it locked; if not, it lost a race with a release and retries.
    """

    def __init__(self, directory: Path, name: str):
        self.path = directory / f"{hashlib.sha256(name.encode()).hexdigest()}.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        for _ in range(10):  # each retry means another owner released in between
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)
        return False

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def keep_alive(self) -> None:
        """flock needs no renewal: it lasts as long as the owning process."""


class RedisLock:
    """A Redis lock (redis-py's token-checked lock) that its owner renews while working.

    The token lives in the object, not in the acquiring thread: a fill's lock is taken by the
    request's thread and renewed and released by the fill's thread."""

    def __init__(self, client, name: str, key_prefix: str, ttl: float):
        # It outlives an owner that died by at most `ttl` seconds (MIRROR_LOCK_TTL).
        self._ttl = ttl
        self._lock = client.lock(
            f"{key_prefix}mirrorsite:lock:{name}", timeout=ttl, blocking=False, thread_local=False
        )
        self._renewed = 0.0

    def try_acquire(self) -> bool:
        acquired = bool(self._lock.acquire(blocking=False))
        self._renewed = time.monotonic()
        return acquired

    def release(self) -> None:
        try:
            self._lock.release()
        except Exception:  # expired or taken over: nothing of ours to release
            pass

    def keep_alive(self) -> None:
        if time.monotonic() - self._renewed > self._ttl / 4:
            self._lock.reacquire()
            self._renewed = time.monotonic()


def remove_abandoned_lock_files(directory: Path, older_than: float) -> int:
    """Delete lock files nobody holds (left by a process killed while holding one).

    Each is removed the way its owner would release it: locked first, then unlinked, so a
    process that locks the file at the same moment notices and retries with a new one.
    """
    removed = 0
    cutoff = time.time() - older_than
    for path in directory.glob("*.lock") if directory.is_dir() else ():
        try:
            if path.stat().st_mtime > cutoff:
                continue
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
                removed += 1
        except (BlockingIOError, FileNotFoundError):
            pass
        finally:
            os.close(fd)
    return removed


_redis_client = None
_redis_lock = threading.Lock()


def _redis():
    global _redis_client
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(settings.REDIS_URL)
        return _redis_client


def named_lock(name: str) -> Lock:
    """The lock for `name` on the configured backend."""
    if settings.REDIS_URL:
        return RedisLock(_redis(), name, settings.MIRROR_REDIS_KEY_PREFIX, settings.MIRROR_LOCK_TTL)
    directory = Path(settings.MIRROR_DATA_DIR) / "tmp" / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    return FileLock(directory, name)


class LockTimeout(Exception):
    pass


def acquire(name: str, timeout: float) -> Lock:
    """Wait (polling) until `name` is ours; LockTimeout after `timeout` seconds."""
    lock = named_lock(name)
    deadline = time.monotonic() + timeout
    while not lock.try_acquire():
        if time.monotonic() > deadline:
            raise LockTimeout(name)
        time.sleep(POLL_INTERVAL)
    return lock
