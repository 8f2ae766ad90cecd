"""Named locks shared by every process (and, through Redis, every replica) of the mirror.

Single-flight needs one owner per blob fill and per tag revalidation. On the embedded default
the locks are `flock` locks on files under MIRROR_DATA_DIR/tmp/locks (the kernel frees them
when the owning process dies). With REDIS_URL set a lock is that file lock (this machine) and a
Redis lock (every replica; expiring, so a dead owner frees it). While Redis is unavailable (see
registry.redisclients: timeouts and a circuit breaker) the file lock alone is taken: single
flight shrinks to this machine, and nothing waits on Redis or fails because of it. Holding the
file lock in both cases keeps one owner per machine across Redis going away or coming back.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
import time
from typing import Protocol

from django.conf import settings
import redis

from registry import redisclients

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
    request's thread and renewed and released by the fill's thread. Redis failing is never the
    caller's problem: acquiring then says RedisUnavailable (the caller goes on without it),
    renewing and releasing give up quietly (the lock expires by itself)."""

    def __init__(self, url: str, name: str, key_prefix: str, ttl: float):
        # It outlives an owner that died by at most `ttl` seconds (MIRROR_LOCK_TTL).
        self._url = url
        self._ttl = ttl
        self._lock = redisclients.client(url).lock(
            f"{key_prefix}mirrorsite:lock:{name}", timeout=ttl, blocking=False, thread_local=False
        )
        self._renewed = 0.0

    def try_acquire(self) -> bool:
        """True or False as Redis says; RedisUnavailable when it cannot say."""
        with redisclients.guarded(self._url):
            acquired = bool(self._lock.acquire(blocking=False))
        self._renewed = time.monotonic()
        return acquired

    def release(self) -> None:
        try:
            with redisclients.guarded(self._url):
                self._lock.release()
        except redis.RedisError:  # expired or taken over (LockError), or Redis gone
            pass

    def keep_alive(self) -> None:
        if time.monotonic() - self._renewed <= self._ttl / 4:
            return
        self._renewed = time.monotonic()
        try:
            with redisclients.guarded(self._url):
                self._lock.reacquire()
        except redis.RedisError:
            pass  # Redis gone or the lock lost: the fill goes on, the file lock still holds here


class SharedLock:
    """This machine's file lock, and the Redis lock while Redis answers."""

    def __init__(self, local: FileLock, shared: RedisLock):
        self.local = local
        self.shared = shared
        self._holds_shared = False

    def try_acquire(self) -> bool:
        if not self.local.try_acquire():
            return False  # another process or thread of this machine owns it
        try:
            if not self.shared.try_acquire():
                self.local.release()
                return False  # another replica owns it
            self._holds_shared = True
        except redis.RedisError:
            self._holds_shared = False  # Redis unavailable: single flight on this machine only
        except BaseException:
            self.local.release()
            raise
        return True

    def release(self) -> None:
        try:
            if self._holds_shared:
                self.shared.release()
        finally:
            self._holds_shared = False
            self.local.release()

    def keep_alive(self) -> None:
        if self._holds_shared:
            self.shared.keep_alive()


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


def named_lock(name: str) -> Lock:
    """The lock for `name` on the configured backend."""
    directory = Path(settings.MIRROR_DATA_DIR) / "tmp" / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    local = FileLock(directory, name)
    if not settings.REDIS_URL:
        return local
    return SharedLock(
        local, RedisLock(settings.REDIS_URL, name, settings.MIRROR_REDIS_KEY_PREFIX, settings.MIRROR_LOCK_TTL)
    )


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
