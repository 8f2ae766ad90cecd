"""The network allow-list (MIRROR_ALLOWED_NETWORKS): which client addresses may use the mirror."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

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


@lru_cache(maxsize=8)
def _monitoring(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


# Where load balancers, orchestrators and scrapers live when nothing says otherwise.
LOCAL_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def monitoring_networks() -> tuple[Network, ...]:
    """MIRROR_MONITORING_NETWORKS, else the allow-list, else loopback and private ranges."""
    return _monitoring(tuple(settings.MIRROR_MONITORING_NETWORKS or settings.MIRROR_ALLOWED_NETWORKS or LOCAL_NETWORKS))


def presents_metrics_token(request: HttpRequest) -> bool:
    """Whether the request carries `Authorization: Bearer <MIRROR_METRICS_TOKEN>` (one is set)."""
    token = settings.MIRROR_METRICS_TOKEN
    return bool(token) and constant_time_compare(request.headers.get("Authorization", ""), f"Bearer {token}")


def monitoring_admitted(request: HttpRequest) -> bool:
    """Whether the request may read what monitoring endpoints tell (upstream URLs, accounts'
    figures): its real client is in MIRROR_MONITORING_NETWORKS, or it presents the metrics token."""
    return presents_metrics_token(request) or in_networks(client_address(request), monitoring_networks())
