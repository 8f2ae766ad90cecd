"""`/v2/token`: the mirror's token endpoint (client authentication, MIRROR_AUTH)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from registry import oci
from registry.api.responses import error_response

from . import tokenservice
from .clientaddress import client_address
from .credentials import BadCredentials


@csrf_exempt
@require_http_methods(["GET", "POST"])
def token(request: HttpRequest) -> HttpResponse:
    request.registry_user = None
    if not settings.MIRROR_AUTH:
        return error_response(oci.NameUnknown("client authentication is off on this mirror"), request.method)
    oauth = request.method == "POST"
    data = request.POST if oauth else request.GET
    address = client_address(request)
    try:
        if oauth and data.get("grant_type") != "password":
            raise tokenservice.TokenRequestInvalid("only the password grant is supported")
        scopes = tokenservice.parse_scopes(data.getlist("scope"))
        tokenservice.check_scope_count(scopes)  # before any password is checked
        if oauth:
            who = tokenservice.requester_from_password(data.get("username", ""), data.get("password", ""), address)
        else:
            who = tokenservice.requester_from_basic(request.headers.get("Authorization", ""), address)
        request.registry_user = who.user
        issued = tokenservice.grant(who, data.get("service"), scopes)
    except oci.TooManyRequests as refused:  # too many failed passwords: 429 with Retry-After
        return error_response(refused, request.method)
    except BadCredentials:
        response = error_response(oci.Unauthorized("incorrect username or password"), request.method)
        response["WWW-Authenticate"] = f'Basic realm="{settings.MIRROR_AUTH_SERVICE}"'
        return response
    except tokenservice.TokenRequestInvalid as error:
        return JsonResponse({"error": "invalid_request", "error_description": str(error)}, status=400)
    body = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at.isoformat().replace("+00:00", "Z"),
    }
    if oauth:
        body["scope"] = " ".join(data.getlist("scope"))
    return JsonResponse(body)
