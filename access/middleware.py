"""Refuses clients outside MIRROR_ALLOWED_NETWORKS before any view runs: /v2/ answers
403 DENIED in the registry's JSON, everything else (admin, API, metrics, readiness) a plain
403. Only /healthz, which says nothing but "ok", stays open for health checkers.

It also starts every request with `request.registry_user = None` (anonymous);
access.authorization sets the user on the /v2/ requests it authorizes."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from registry import oci
from registry.api.responses import API_VERSION_HEADER, error_response

from .networks import admitted

OPEN_PATHS = frozenset({"/healthz"})


class AllowedNetworksMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Anonymous until authorization names the user: set on every request, so whatever
        # reads it (the audit log) finds it even on requests refused before that.
        request.registry_user = None
        if request.path in OPEN_PATHS or admitted(request):
            return self.get_response(request)
        return refusal_response(request.path, request.method)


def refusal_response(path: str, method: str) -> HttpResponse:
    """The 403 of a client outside the allow-list (also written by the server's event loop,
    mirrorsite.gunicorn_worker, to clients it refuses by their connection's address)."""
    if path.startswith("/v2/") or path == "/v2":
        response = error_response(oci.Denied("this mirror does not serve your network"), method)
        response[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        return response
    return HttpResponse("this mirror does not serve your network\n", status=403, content_type="text/plain")
