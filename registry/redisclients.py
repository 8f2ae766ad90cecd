"""The one factory of the process's Redis clients, and what it knows about each Redis's health.

Every client has short timeouts (MIRROR_REDIS_TIMEOUT, to connect and per socket operation) and
does not retry a timeout, so a Redis that stops answering costs a caller that long at most,
never a hang. A circuit breaker per Redis saves callers even that while Redis is known down:
after a connection error or a timeout, `guarded` refuses at once (RedisUnavailable) for
RETRY_AFTER seconds, then lets one caller probe again. The change of state is logged once,
not per request, and /readyz reports it.

Callers that have a fallback (locks: this machine's file locks; the token cache: each process's
own tokens; statistics: the database) use `guarded` and take their fallback on RedisError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import logging
import threading
import time
from urllib.parse import urlsplit

from django.conf import settings
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

# Seconds a Redis that failed is not asked again (then one caller probes it).
RETRY_AFTER = 5.0
# Failures that say Redis is unreachable or hung (not a refused command).
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError)


class RedisUnavailable(redis.ConnectionError):
    """Redis failed a moment ago: not asked again yet."""


def timeout() -> float:
    return float(settings.MIRROR_REDIS_TIMEOUT)


def connection_options(seconds: float | None = None) -> dict:
    """The socket options every client of the mirror's Redis gets (also for Django's cache)."""
    seconds = timeout() if seconds is None else seconds
    return {"socket_timeout": seconds, "socket_connect_timeout": seconds}


_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def client(url: str) -> redis.Redis:
    """The process's client of the Redis at `url` (redis-py pools connections, and starts a
    new pool after a fork)."""
    with _lock:
        found = _clients.get(url)
        if found is None:
            found = redis.Redis.from_url(
                url,
                **connection_options(),
                # redis-py retries three times with backoff by default: up to four timeouts and
                # seconds of sleep per call. One immediate retry of a dropped connection (Redis
                # restarted under a pooled connection) costs nothing; a timeout is never retried.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
            _clients[url] = found
        return found


@dataclass
class Health:
    """What the breaker knows of one Redis."""

    down_since: float | None = None  # time.time() of the first failure of this outage
    error: str = ""  # its kind, e.g. "TimeoutError"
    retry_at: float = 0.0  # time.monotonic() from which one caller may probe


class Breaker:
    """The circuit breaker of one Redis, shared by the threads of a process."""

    def __init__(self, url: str, retry_after: float = RETRY_AFTER):
        self.url = url
        self.retry_after = retry_after
        self._health = Health()
        self._lock = threading.Lock()

    def allows(self) -> bool:
        """Whether to ask Redis now: yes while it answers; while it is down, only the first
        caller after each RETRY_AFTER (the probe), so others do not pay the timeout too."""
        with self._lock:
            health = self._health
            if health.down_since is None:
                return True
            now = time.monotonic()
            if now < health.retry_at:
                return False
            health.retry_at = now + self.retry_after
            return True

    def failed(self, error: BaseException) -> None:
        with self._lock:
            health = self._health
            health.retry_at = time.monotonic() + self.retry_after
            health.error = type(error).__name__
            if health.down_since is not None:
                return
            health.down_since = time.time()
        logger.warning(
            "Redis %s unavailable (%s): single flight falls back to this machine's file locks, upstream "
            "tokens are not shared, statistics go to the database, until it answers again "
            "(asked again every %.0f s)",
            _without_password(self.url),
            type(error).__name__,
            self.retry_after,
        )

    def succeeded(self) -> None:
        with self._lock:
            health = self._health
            if health.down_since is None:
                return
            outage = time.time() - health.down_since
            self._health = Health()
        logger.warning(
            "Redis %s answers again (after %.0f s): shared locks and tokens resume", _without_password(self.url), outage
        )

    def health(self) -> Health:
        with self._lock:
            return Health(self._health.down_since, self._health.error, self._health.retry_at)

    def is_down(self) -> bool:
        return self.health().down_since is not None


_breakers: dict[str, Breaker] = {}


def breaker(url: str) -> Breaker:
    with _lock:
        found = _breakers.get(url)
        if found is None:
            found = _breakers[url] = Breaker(url)
        return found


@contextmanager
def guarded(url: str) -> Iterator[redis.Redis]:
    """The client of `url`, unless its breaker is open (RedisUnavailable, at once). A
    connection error or timeout inside opens the breaker; success closes it."""
    circuit = breaker(url)
    if not circuit.allows():
        raise RedisUnavailable(f"Redis unavailable ({circuit.health().error}), not asked again yet")
    try:
        yield client(url)
    except OUTAGE_ERRORS as error:
        if not isinstance(error, RedisUnavailable):
            circuit.failed(error)
        raise
    circuit.succeeded()


def forget() -> None:
    """Drop every client and breaker (tests that point the settings at another Redis)."""
    with _lock:
        _clients.clear()
        _breakers.clear()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if host else parts.scheme + "://"
