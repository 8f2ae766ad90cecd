"""Liveness and readiness for load balancers and orchestrators."""
import tempfile

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from registry.blobstore import default_store


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The process can serve its cache: database reachable, blob store writable."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except DatabaseError as error:
        checks["database"] = f"error: {type(error).__name__}"
    try:
        with tempfile.TemporaryFile(dir=default_store().tmp_dir) as probe:
            probe.write(b"ok")
        checks["storage"] = "ok"
    except OSError as error:
        checks["storage"] = f"error: {error.strerror or type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
