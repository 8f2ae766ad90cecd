"""The real address of the client behind a request, trusting only configured proxies.

`X-Forwarded-For` is honoured only when the connection comes from an address in
MIRROR_TRUSTED_PROXIES; its entries are read right to left, skipping further trusted proxies,
and the first untrusted one is the client. Anything malformed yields no address at all, which
an allow-list treats as not allowed (a forged header can never pick a trusted address).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
import ipaddress

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from a setting; a bad entry is a configuration error."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


@lru_cache(maxsize=8)
def _trusted(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


def trusted_proxies() -> tuple[Network, ...]:
    return _trusted(tuple(settings.MIRROR_TRUSTED_PROXIES))


def parse_address(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[v6]:port"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "v4:port"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_networks(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(request: HttpRequest) -> Address | None:
    """The client's address, or None when it cannot be told (malformed forwarding header)."""
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    proxies = trusted_proxies()
    if not in_networks(peer, proxies):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop for hop in forwarded.split(",")] if forwarded.strip() else []
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return None
        if not in_networks(address, proxies):
            return address
    # Every hop was a trusted proxy (or none was named): the nearest one is all we know.
    return parse_address(hops[0]) if hops else peer
