"""Liveness and readiness for load balancers and orchestrators.

/healthz is open to anyone. /readyz names the upstreams and how their accounts fare, so it is
answered only to clients in MIRROR_MONITORING_NETWORKS (by default the allow-list's, or without
one loopback and the private ranges: where load balancers, orchestrators and scrapers live) or
presenting the MIRROR_METRICS_TOKEN; others get 403. It never names an account (an account is
its id).
"""

from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
import redis

from access.networks import monitoring_admitted
from registry import redisclients
from registry.models import Upstream
from registry.storage import default_store
from registry.storage.blobstore import StorageUnavailable

# Reported, never a reason to be unready: statistics wait in memory for their Redis; without
# REDIS_URL's Redis the replica still serves (single flight on this machine's file locks, its
# own upstream tokens: `fallbacks` says so), and every replica shares that Redis.
NOT_REQUIRED = frozenset({"statistics", "redis"})


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    """The process can serve its cache: database reachable, blob store writable, its Redis
    answering when one is configured; 503 names what is `failing`, so a load balancer sends
    pulls elsewhere. How each upstream and account fared when last asked is reported beside,
    without failing readiness."""
    if not monitoring_admitted(request):
        return HttpResponse("readiness is not reported to your address\n", status=403, content_type="text/plain")
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
    fallbacks = _fallbacks(checks)
    failing = [name for name, value in checks.items() if value.startswith("error") and name not in NOT_REQUIRED]
    ready = not failing
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    if fallbacks:
        body["fallbacks"] = fallbacks
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
            # Through the breaker: a Redis known down is reported without waiting on it again.
            with redisclients.guarded(url) as client:
                client.ping()
            checks[name] = "ok"
        except redisclients.RedisUnavailable:
            checks[name] = f"error: {redisclients.breaker(url).health().error or 'ConnectionError'}"
        except redis.RedisError as error:
            checks[name] = f"error: {type(error).__name__}"
    return checks


def _fallbacks(checks: dict[str, str]) -> dict[str, str]:
    """What this process does instead while REDIS_URL's Redis is unavailable."""
    if not checks.get("redis", "").startswith("error"):
        return {}
    since = redisclients.breaker(settings.REDIS_URL).health().down_since
    when = f" since {datetime.fromtimestamp(since, UTC).isoformat(timespec='seconds')}" if since else ""
    return {
        "locks": f"single flight on this machine's file locks (Redis unavailable{when})",
        "upstream_tokens": "kept by each process, not shared",
    }


def _upstreams() -> dict[str, dict]:
    """Per upstream: whether it answered when last asked, and its accounts' verification,
    each account by its id (as in the admin), never by its name."""
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
                "account_in_use": active.pk if active is not None else None,
                "accounts": {
                    str(account.pk): {
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
