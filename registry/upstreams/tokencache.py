"""Upstream Bearer tokens shared by every replica through Redis.

A token is good for one account and one scope until it expires. With REDIS_URL set, the first
process to get one leaves it in Redis, expiring with the token, and the others authenticate with
it instead of asking the upstream's token service again: a pull spread over N replicas costs one
token per repository, not N. Tokens are stored encrypted like account secrets (secrets.py), so
Redis never holds a usable credential in clear. Without Redis each process keeps its own
(UpstreamClient's memory). A Redis that fails is a cache miss, never a failed pull.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from django.conf import settings
import redis

from registry import redisclients, secrets

logger = logging.getLogger(__name__)


class SharedTokens:
    def __init__(self, redis_url: str, key_prefix: str = ""):
        self.redis_url = redis_url
        self.key_prefix = key_prefix

    def key(self, upstream_url: str, username: str, scope: str) -> str:
        account_scope = hashlib.sha256(f"{upstream_url}\0{username}\0{scope}".encode()).hexdigest()
        return f"{self.key_prefix}mirrorsite:token:{account_scope}"

    def get(self, upstream_url: str, username: str, scope: str) -> tuple[str, float] | None:
        """(token, seconds it stays good) when another process left one, else None."""
        try:
            with redisclients.guarded(self.redis_url) as client:
                stored = client.get(self.key(upstream_url, username, scope))
        except redisclients.OUTAGE_ERRORS:
            return None  # Redis unavailable: the client factory said so once, not per request
        except redis.RedisError as error:
            logger.warning("shared token cache unavailable: %s", type(error).__name__)
            return None
        if stored is None:
            return None
        try:
            entry = json.loads(secrets.decrypt(stored.decode("ascii")))
            token, seconds = str(entry["token"]), float(entry["expires_at"]) - time.time()
        except (secrets.SecretUnreadable, UnicodeError, ValueError, KeyError, TypeError):
            return None  # written under another key, or not by us
        return (token, seconds) if seconds > 0 else None

    def put(self, upstream_url: str, username: str, scope: str, token: str, seconds: float) -> None:
        if seconds <= 0:
            return
        entry = json.dumps({"token": token, "expires_at": time.time() + seconds})
        try:
            with redisclients.guarded(self.redis_url) as client:
                client.set(
                    self.key(upstream_url, username, scope), secrets.encrypt(entry), px=max(int(seconds * 1000), 1)
                )
        except redisclients.OUTAGE_ERRORS:
            pass  # kept by this process only, meanwhile
        except redis.RedisError as error:
            logger.warning("could not share an upstream token: %s", type(error).__name__)


def shared_tokens() -> SharedTokens | None:
    """The replicas' shared cache when Redis is configured."""
    if not settings.REDIS_URL:
        return None
    return SharedTokens(settings.REDIS_URL, settings.MIRROR_REDIS_KEY_PREFIX)
