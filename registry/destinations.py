"""Where an upstream may send the mirror: redirect targets and token realms.

An upstream is trusted with its own host, and with the token realm hosts listed for it; a
host it merely names (in a redirect's Location, in a challenge's realm) is not:

- a redirect is followed for blobs only (the caller decides that), never from HTTPS to HTTP,
  and only to a host whose every address is public, or of the same class (loopback,
  private, link-local...) as an address of the upstream's own host: an upstream on
  127.0.0.1 may send blobs to another loopback port, Docker Hub may not send the mirror to
  169.254.169.254. The address checked is the address connected to (`GuardedAdapter`), so
  a name that resolves differently the second time (DNS rebinding) gains nothing;
- a token realm is asked (with the account's credentials, or anonymously: a realm could be
  an internal service as well) only over HTTPS on the upstream's own host or a listed realm
  host, or over HTTP on the upstream's own host when the upstream itself is plain HTTP.
  Ports do not matter: the host is the unit of trust (Distribution's token service often
  listens on another port of the registry's host).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import ipaddress
import re
import socket
from urllib.parse import SplitResult, urljoin, urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError

PUBLIC = "public"
DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com"})
# Docker Hub's token service is not on its registry's host.
DOCKER_HUB_REALM_HOSTS = ("auth.docker.io",)
# What a URL an upstream sends may look like: printable ASCII, no spaces, bounded.
_URL_TEXT = re.compile(r"^[\x21-\x7e]{1,2048}\Z")


class DestinationRefused(Exception):
    """The mirror will not go where the upstream sent it; the message says why. Not an
    OSError: raised while urllib3 connects, it must reach the caller unwrapped."""


def address_class(address: str) -> str:
    """`public`, or the kind of non-public address: loopback, link-local, unspecified,
    multicast, private (RFC 1918, unique local, shared, reserved, documentation...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
    ):
        if test:
            return kind
    return PUBLIC if ip.is_global else "private"


def default_realm_hosts(url: str) -> list[str]:
    """The hosts besides its own whose token realm an upstream's credentials go to, unless
    told otherwise: Docker Hub's auth.docker.io for Docker Hub, none for others."""
    return list(DOCKER_HUB_REALM_HOSTS) if (urlsplit(url).hostname or "") in DOCKER_HUB_HOSTS else []


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every address `host` resolves to (an address is itself); socket.gaierror if none."""
    found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in found))


def _host(parts: SplitResult) -> str:
    return (parts.hostname or "").rstrip(".").lower()


def valid_url(url: str) -> SplitResult | None:
    """An absolute http(s) URL with a host, of plain printable characters; else None."""
    if not isinstance(url, str) or not _URL_TEXT.match(url):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not _host(parts) or parts.username is not None:
        return None
    return parts


@dataclass(frozen=True)
class Destinations:
    """The rules for one upstream (its URL, and the realm hosts listed for it)."""

    upstream_url: str
    realm_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, upstream_url: str, realm_hosts: Iterable[str] = ()) -> Destinations:
        return cls(upstream_url, frozenset(host.rstrip(".").lower() for host in realm_hosts if host))

    @property
    def home(self) -> str:
        return _host(urlsplit(self.upstream_url))

    def trusts(self, host: str) -> bool:
        """The upstream's own host, or a listed realm host: connected to as configured."""
        host = host.strip("[]").rstrip(".").lower()
        return host == self.home or host in self.realm_hosts

    # --- redirects -------------------------------------------------------------------------------
    def redirect_target(self, current: str, location: str | None) -> str:
        """The absolute URL a redirect from `current` leads to, once it may be followed
        (addresses are checked again when connecting); DestinationRefused if not."""
        if not location:
            raise DestinationRefused("upstream redirected without a Location")
        target = urljoin(current, location)
        parts = valid_url(target)
        if parts is None:
            raise DestinationRefused("upstream redirected to a URL that is not http(s)://host/...")
        if urlsplit(current).scheme == "https" and parts.scheme == "http":
            raise DestinationRefused(f"upstream redirected from HTTPS to plain HTTP ({_host(parts)}); refused")
        if not self.trusts(_host(parts)):
            try:
                self.checked_addresses(_host(parts), parts.port)
            except socket.gaierror:
                pass  # connecting will fail the same way, and say so
        return target

    def checked_addresses(self, host: str, port: int | None) -> list[str]:
        """The addresses of `host` the mirror may connect to: all of them, or none
        (DestinationRefused) when any is not public and not of the upstream's own class."""
        addresses = resolve(host, port)
        allowed = self._allowed_classes()
        refused = [address for address in addresses if address_class(address) not in allowed]
        if refused:
            kinds = sorted({address_class(address) for address in refused})
            raise DestinationRefused(
                f"upstream sent the mirror to {host}, a {'/'.join(kinds)} address; only public addresses "
                f"(or of the upstream's own kind) are reached"
            )
        return addresses

    def _allowed_classes(self) -> set[str]:
        try:
            return {PUBLIC} | {address_class(address) for address in resolve(self.home)}
        except (socket.gaierror, ValueError):
            return {PUBLIC}

    # --- token realms ----------------------------------------------------------------------------
    def realm_refusal(self, realm: str) -> str | None:
        """Why the mirror will not ask this token realm for a token; None when it may."""
        parts = valid_url(realm)
        if parts is None:
            return "the upstream's token realm is not an http(s) URL; no token requested"
        upstream = urlsplit(self.upstream_url)
        host = _host(parts)
        if host == self.home:
            if parts.scheme == "https" or upstream.scheme == "http":
                return None
            return (
                f"the upstream's token realm on {host} is plain HTTP while the upstream is HTTPS; no credentials sent"
            )
        if host in self.realm_hosts:
            if parts.scheme == "https":
                return None
            return f"the upstream's token realm on listed realm host {host} is plain HTTP; no credentials sent"
        return (
            f"the upstream's token realm is on {host}, neither the upstream's host ({self.home}) nor one of its "
            f"realm hosts; no credentials sent (list it in the upstream's realm hosts to trust it)"
        )


# --- connecting only to checked addresses ------------------------------------------------------
def _guarded_new_conn(connection: HTTPConnection, connect) -> socket.socket:
    """Connect to an address of the host that the rules allow (resolved here, once): what was
    checked is what is connected to. The upstream's trusted hosts, and connections through an
    HTTP proxy (which resolves names itself), connect as urllib3 does."""
    destinations: Destinations | None = getattr(connection, "destinations", None)
    host = connection._dns_host
    if destinations is None or connection.proxy is not None or destinations.trusts(host):
        return connect()
    try:
        addresses = destinations.checked_addresses(host, connection.port)
    except socket.gaierror:
        return connect()  # urllib3 reports the failed resolution
    failure: Exception | None = None
    for address in addresses:
        connection._dns_host = address  # restored before TLS: SNI and verification use the name
        try:
            return connect()
        except (OSError, HTTPError) as error:  # urllib3's NewConnectionError, ConnectTimeoutError
            failure = error
        finally:
            connection._dns_host = host
    raise failure if failure else DestinationRefused(f"{host} has no address")


class _GuardedHTTPConnection(HTTPConnection):
    destinations: Destinations | None = None

    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self, super()._new_conn)


class _GuardedHTTPSConnection(HTTPSConnection):
    destinations: Destinations | None = None

    def _new_conn(self) -> socket.socket:
        return _guarded_new_conn(self, super()._new_conn)


class GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connections keep to `destinations`."""

    def __init__(self, destinations: Destinations, **kwargs):
        self.destinations = destinations
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        rules = {"destinations": getattr(self, "destinations", None)}
        http = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), rules)
        https = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), rules)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
