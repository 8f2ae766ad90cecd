"""Liveness and readiness for load balancers and orchestrators."""
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
import redis

from registry.storage.blobstore import StorageUnavailable, default_store
from registry.models import Upstream

from registry import redisclients

# Reported, never a reason to be unready: statistics wait in memory for their Redis.
NOT_REQUIRED = frozenset({"statistics"})


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The process can serve its cache: database reachable, blob store writable, its Redis
    answering when one is configured; 503 names what is `failing`, so a load balancer sends
    pulls elsewhere. How each upstream and account fared when last asked is reported beside,
    without failing readiness."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except DatabaseError as error:
        checks["database"] = f"error: {type(error).__name__}"
    try:
        default_store().probe()
        checks["storage"] = "ok"
    except StorageUnavailable as error:
        checks["storage"] = f"error: {error}"
    checks.update(_redis_checks())
    failing = [name for name, value in checks.items() if value.startswith("error") and name not in NOT_REQUIRED]
    ready = not failing
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    if checks["database"] == "ok":
        body["upstreams"] = _upstreams()
    # Upstreams are reported, never a reason to be unready: the cache serves without them.
    return JsonResponse(body, status=200 if ready else 503)


def _redis_checks() -> dict[str, str]:
    """Each Redis the process is configured with, pinged: `redis` (REDIS_URL: locks,
    single-flight, the shared token cache), `broker` (CELERY_BROKER_URL, when another Redis),
    `statistics` (MIRROR_STATS_REDIS_URL, when another Redis)."""
    checks, seen = {}, set()
    for name, url in (
        ("redis", settings.REDIS_URL),
        ("broker", settings.CELERY_BROKER_URL if settings.MIRROR_BROKER_CONFIGURED else ""),
        ("statistics", settings.MIRROR_STATS_REDIS_URL),
    ):
        if not url or url in seen:
            continue
        seen.add(url)
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            checks[name] = "not checked"  # another kind of broker: its workers say how it is
            continue
        try:
            redisclients.client(url).ping()
            checks[name] = "ok"
        except redis.RedisError as error:
            checks[name] = f"error: {type(error).__name__}"
    return checks


def _upstreams() -> dict[str, dict]:
    """Per upstream: whether it answered when last asked, and its accounts' verification."""
    report = {}
    try:
        for upstream in Upstream.objects.select_related("active_account").order_by("name"):
            status = {True: "ok", False: "unreachable", None: "unknown"}[upstream.reachable]
            active = upstream.active_account
            report[upstream.name] = {
                "url": upstream.url,
                "status": status,
                "checked_at": upstream.checked_at.isoformat() if upstream.checked_at else None,
                "message": upstream.check_message,
                "account_in_use": active.label if active is not None else None,
                "accounts": {
                    account.label: {
                        "enabled": account.enabled,
                        "verification": account.verification or "not yet",
                        "verified_at": account.verified_at.isoformat() if account.verified_at else None,
                        "ratelimit_remaining": account.ratelimit_remaining,
                        "rate_limited_until": account.cooldown_until.isoformat() if account.cooldown_until else None,
                    }
                    for account in upstream.accounts.all()
                },
            }
    except DatabaseError as error:
        return {"error": type(error).__name__}
    return report
