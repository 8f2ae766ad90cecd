"""Redis clients of a process, one per URL, with short timeouts: a Redis that stops answering
costs a caller (a readiness check, a token lookup) a couple of seconds at most, never a hang."""
from __future__ import annotations

import threading

SOCKET_TIMEOUT = 2.0

_clients: dict[str, object] = {}
_lock = threading.Lock()


def client(url: str):
    """The process's client of the Redis at `url` (redis-py pools connections, and starts a
    new pool after a fork)."""
    with _lock:
        found = _clients.get(url)
        if found is None:
            import redis

            found = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
            _clients[url] = found
        return found
