"""The Bearer challenge of a 401, as Docker Hub and Distribution's token auth send it."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from registry import oci

from .clientaddress import in_networks, parse_address, trusted_proxies

TOKEN_PATH = "/v2/token"


class AuthenticationRequired(oci.Unauthorized):
    """401 UNAUTHORIZED, with the challenge telling the client where to get a token."""

    def __init__(self, message: str, challenge_header: str):
        super().__init__(message)
        self.headers = {"WWW-Authenticate": challenge_header}


def realm(request: HttpRequest) -> str:
    """MIRROR_AUTH_REALM, else the token endpoint on the scheme and host the client used
    (the scheme a trusted proxy says it received, behind one)."""
    if settings.MIRROR_AUTH_REALM:
        return settings.MIRROR_AUTH_REALM
    scheme = request.scheme
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    forwarded = request.META.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https") and in_networks(peer, trusted_proxies()):
        scheme = forwarded
    return f"{scheme}://{request.get_host()}{TOKEN_PATH}"


def challenge(request: HttpRequest, repository: str | None, *, error: str | None = None) -> str:
    params = [f'realm="{realm(request)}"', f'service="{settings.MIRROR_AUTH_SERVICE}"']
    if repository:
        params.append(f'scope="repository:{repository}:pull"')
    if error:
        params.append(f'error="{error}"')
    return "Bearer " + ",".join(params)
