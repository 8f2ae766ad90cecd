"""Requests carrying a NUL character in their query string are refused at the door.

No name, tag, filter or search term contains one, and PostgreSQL cannot even compare a string
that does (the query would fail with a 500). A 400 in the format of the part of the site asked:
registry JSON on /v2/, `{"detail": ...}` elsewhere (the REST API's own error shape).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from registry import oci
from registry.api.responses import API_VERSION_HEADER, error_response

MESSAGE = "the query string contains a NUL character"


class RejectNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()):
            if request.path.startswith("/v2/"):
                # `last` and `ns`, the query's strings on /v2/, are names: none has a NUL.
                response = error_response(oci.NameInvalid(MESSAGE), request.method)
                response[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
                return response
            return JsonResponse({"detail": MESSAGE}, status=400)
        return self.get_response(request)
