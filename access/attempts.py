"""The one limiter of password guessing: every password check (Basic on /v2/, /v2/token's GET
and OAuth POST, the admin login form, the REST API's token authentication) reserves an
attempt here BEFORE the password hash is computed.

Attempts are counted per user name (MIRROR_LOGIN_ATTEMPTS) and per client address
(MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS; an IPv6 client by its /64) over a window of
MIRROR_LOGIN_LOCKOUT seconds that runs from the last counted attempt. A check is refused,
uncounted and without looking at the password, while either count is at its limit
(TooManyAttempts, a registry 429 with Retry-After). A check whose password holds gives its
address back its attempt and clears its user name's count.

Reserving is one atomic step (check both counts, then count both), so parallel guesses
cannot slip past the limit: a Lua script in Redis when REDIS_URL is set (shared by every
replica), else one transaction in the database (shared by the processes using it). When
Redis does not answer, the database counts instead (per database, so still limited); when
the database does not answer either, the check goes on uncounted (it would fail anyway
without a database) and a warning says so. No password check ever fails because of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
import hashlib
import ipaddress
import logging
import math
import random
import threading
import time

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone
import redis

from registry import oci, redisclients

logger = logging.getLogger(__name__)

CLEANUP_CHANCE = 0.01  # a reservation now and then deletes the database's expired counts
_WARN_EVERY = 60.0  # seconds between two warnings that a counter is down (a guessing attack would flood the log)
_last_warning: dict[str, float] = {}
_warning_lock = threading.Lock()

# KEYS: the counters; ARGV[1]: the window (seconds); ARGV[i + 1]: the limit of KEYS[i].
# Returns 0 when the attempt was counted, else the seconds until the fullest counter expires.
_RESERVE = """
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return 0
"""
# KEYS[1]: the user name's counter (cleared); KEYS[2], when given: the address's (one given back).
_SUCCEEDED = """
if KEYS[1] ~= '' then redis.call('DEL', KEYS[1]) end
if KEYS[2] and tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""


class TooManyAttempts(oci.TooManyRequests):
    """429 TOOMANYREQUESTS: too many failed password checks for the user name or the address."""

    def __init__(self, retry_after: int):
        super().__init__("too many failed logins: try again later", {"retry_after": retry_after})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Counter:
    key: str
    limit: int


def counters(username: str | None, address: object) -> tuple[Counter | None, Counter | None]:
    """The user name's and the address's counters (None where no limit applies). Keys are
    hashes: no raw input reaches Redis or the database."""
    user = None
    if username and settings.MIRROR_LOGIN_ATTEMPTS > 0:
        user = Counter("user:" + _digest(username.strip().lower()), settings.MIRROR_LOGIN_ATTEMPTS)
    where = None
    if settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS > 0:
        where = Counter("addr:" + _digest(address_group(address)), settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS)
    return user, where


def address_group(address: object) -> str:
    """What one client is: its IPv4 address, its IPv6 /64 (one host gets a whole /64),
    "unknown" for an address that could not be told."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address is not None else "unknown"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:40]


class Attempt:
    """A reserved password check. Call `succeeded()` when the password held; a failure needs
    nothing (it stays counted)."""

    def __init__(self, store: RedisStore | DatabaseStore | None, user: Counter | None, where: Counter | None):
        self._store, self._user, self._where = store, user, where

    def succeeded(self) -> None:
        if self._store is None or (self._user is None and self._where is None):
            return
        try:
            self._store.succeeded(self._user, self._where)
        except (redis.RedisError, DatabaseError) as error:
            _warn(type(self._store).__name__, f"cannot record a successful login ({type(error).__name__})")


def begin(username: str | None, address: object) -> Attempt:
    """Reserve one password check for `username` (None or "": no user name, e.g. an API token)
    from `address` (an ipaddress address, or None); TooManyAttempts when either is at its limit."""
    user, where = counters(username, address)
    active = [counter for counter in (user, where) if counter is not None]
    if not active:
        return Attempt(None, None, None)
    window = max(1, settings.MIRROR_LOGIN_LOCKOUT)
    stores: list[RedisStore | DatabaseStore] = [DatabaseStore()]
    if settings.REDIS_URL:
        stores.insert(0, RedisStore(settings.REDIS_URL))
    for store in stores:
        try:
            wait = store.reserve(active, window)
        except (redis.RedisError, DatabaseError) as error:
            _warn(type(store).__name__, f"password attempts cannot be counted in {store.name} ({type(error).__name__})")
            continue
        if wait > 0:
            logger.warning("password check refused: too many failures (user name or address), %ss left", wait)
            raise TooManyAttempts(wait)
        return Attempt(store, user, where)
    _warn("all", "password attempts are not limited: neither Redis nor the database answers")
    return Attempt(None, None, None)


class RedisStore:
    """Counters in Redis (MIRROR_REDIS_KEY_PREFIX + "password-attempts:" + key), shared by replicas."""

    name = "Redis"

    def __init__(self, url: str):
        self._client = redisclients.client(url)
        self._prefix = f"{settings.MIRROR_REDIS_KEY_PREFIX}password-attempts:"

    def reserve(self, active: list[Counter], window: int) -> int:
        keys = [self._prefix + counter.key for counter in active]
        return int(self._client.eval(_RESERVE, len(keys), *keys, window, *(counter.limit for counter in active)))

    def succeeded(self, user: Counter | None, where: Counter | None) -> None:
        keys = [self._prefix + user.key if user is not None else ""]
        if where is not None:
            keys.append(self._prefix + where.key)
        self._client.eval(_SUCCEEDED, len(keys), *keys)


class DatabaseStore:
    """Counters in the database (access.PasswordAttempts): one transaction that locks the rows
    (SELECT FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transactions take the write lock at
    BEGIN), so processes sharing the database count together."""

    name = "the database"

    def reserve(self, active: list[Counter], window: int) -> int:
        from .models import PasswordAttempts

        keys = [counter.key for counter in active]
        with transaction.atomic():
            PasswordAttempts.objects.bulk_create(
                [PasswordAttempts(key=key, count=0, window_ends=timezone.now()) for key in keys], ignore_conflicts=True
            )
            rows = {
                row.key: row
                for row in PasswordAttempts.objects.select_for_update().filter(key__in=keys).order_by("key")
            }
            now = timezone.now()  # once the rows are locked: no later reservation can be earlier
            wait = 0
            for counter in active:
                row = rows[counter.key]
                if row.window_ends > now and row.count >= counter.limit:
                    wait = max(wait, math.ceil((row.window_ends - now).total_seconds()))
            if wait > 0:
                return wait
            for counter in active:
                row = rows[counter.key]
                count = row.count + 1 if row.window_ends > now else 1
                PasswordAttempts.objects.filter(pk=row.pk).update(
                    count=count, window_ends=now + timedelta(seconds=window)
                )
        if random.random() < CLEANUP_CHANCE:
            PasswordAttempts.objects.filter(window_ends__lt=now).delete()
        return 0

    def succeeded(self, user: Counter | None, where: Counter | None) -> None:
        from .models import PasswordAttempts

        if user is not None:
            PasswordAttempts.objects.filter(key=user.key).update(count=0)
        if where is not None:
            PasswordAttempts.objects.filter(key=where.key, count__gt=0).update(count=F("count") - 1)


def _warn(topic: str, message: str) -> None:
    now = time.monotonic()
    with _warning_lock:
        if now - _last_warning.get(topic, -_WARN_EVERY) < _WARN_EVERY:
            return
        _last_warning[topic] = now
    logger.warning(message)
