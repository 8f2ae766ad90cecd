"""The network allow-list (MIRROR_ALLOWED_NETWORKS): which client addresses may use the mirror."""
from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

from .clientaddress import Network, client_address, in_networks, parse_networks


@lru_cache(maxsize=8)
def _allowed(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


def allowed_networks() -> tuple[Network, ...]:
    return _allowed(tuple(settings.MIRROR_ALLOWED_NETWORKS))


def admitted(request: HttpRequest) -> bool:
    """Whether the request's real client may use the mirror. With no allow-list everyone may;
    with one, a client whose address cannot be told (a malformed X-Forwarded-For) may not."""
    networks = allowed_networks()
    return not networks or in_networks(client_address(request), networks)
