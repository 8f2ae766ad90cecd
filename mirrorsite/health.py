"""Liveness and readiness for load balancers and orchestrators."""
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from registry.blobstore import StorageUnavailable, default_store
from registry.models import Upstream


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The process can serve its cache: database reachable, blob store writable. How each
    upstream and account fared when last asked is reported beside, without failing readiness."""
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
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if checks["database"] == "ok":
        body["upstreams"] = _upstreams()
    # Upstreams are reported, never a reason to be unready: the cache serves without them.
    return JsonResponse(body, status=200 if ready else 503)


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
