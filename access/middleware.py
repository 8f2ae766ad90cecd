"""Refuses clients outside MIRROR_ALLOWED_NETWORKS before any view runs: /v2/ answers
403 DENIED in the registry's JSON, everything else (admin, API, metrics, readiness) a plain
403. Only /healthz, which says nothing but "ok", stays open for health checkers.

It also starts every request with `request.registry_user = None` (anonymous);
access.authorization sets the user on the /v2/ requests it authorizes."""
from __future__ import annotations

from typing import Callable

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
        if request.path.startswith("/v2/") or request.path == "/v2":
            response = error_response(oci.Denied("this mirror does not serve your network"), request.method)
            response[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
            return response
        return HttpResponse("this mirror does not serve your network\n", status=403, content_type="text/plain")
