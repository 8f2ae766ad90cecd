"""Which upstream a /v2/ request is for.

1. containerd's `?ns=<registry host>` (sent to every mirror named in a hosts.toml) picks the
   upstream whose host names include it; the response echoes it as `OCI-Namespace`.
2. Else a path prefix: `/v2/<alias>/<repository>/...` picks the upstream with that alias,
   and `/v2/<registry host>/<repository>/...` (a first component with a dot or a colon, or
   `localhost`, as Docker reads image names) the upstream answering for that host. This is
   what podman and CRI-O send for a mirror `location` with a path.
3. Else the default upstream (REGISTRY_PROXY_REMOTEURL, Docker Hub unless configured).

A namespace or host prefix no upstream answers for is a 404 NAME_UNKNOWN, then a repository
name that is not valid a 400 NAME_INVALID. Only upstream records are ever contacted: nothing a
client sends becomes part of an upstream's address.

A route is made once per request and handed to the access policy and to the proxy: the name
is checked once, when the route is made, and the upstream's allow and deny patterns once, when
either first asks for `Route.repository`.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools

from django.http import HttpRequest

from registry import oci
from registry.memory import AnswerMemory
from registry.models import Upstream

TABLE_SECONDS = 10.0  # how long a process trusts its copy of the upstreams (admin edits show after this)
_tables: AnswerMemory[Table] = AnswerMemory(4 * 1024 * 1024)


class UnknownRegistry(oci.NameUnknown):
    status = 404


@dataclass(frozen=True)
class Table:
    default: Upstream
    by_host: dict[str, Upstream]
    by_alias: dict[str, Upstream]


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    name: str | None  # the repository name within that upstream (prefix removed), valid
    namespace: str | None = None  # the `ns` that chose it

    def __post_init__(self) -> None:
        if self.name is not None:
            oci.validate_name(self.name)

    @functools.cached_property
    def repository(self) -> str:
        """The repository as the upstream knows it (`alpine` → `library/alpine` on Docker Hub),
        once the upstream's allow and deny patterns let the mirror pull it; else 403 DENIED.
        Asked once per route: by the access policy, else by the proxy."""
        if self.name is None:
            raise ValueError("a route without a repository has no upstream repository")
        repo_name = self.upstream.upstream_name(self.name)
        if not self.upstream.allows(repo_name):
            raise oci.Denied("this mirror does not serve that repository from this upstream", {"name": self.name})
        return repo_name


def table() -> Table:
    found = _tables.get("table")
    if found is None:
        default = Upstream.objects.default()
        by_host: dict[str, Upstream] = {}
        by_alias: dict[str, Upstream] = {}
        # The default first, then by age: when two claim a host, the older keeps it.
        for upstream in [default] + list(Upstream.objects.exclude(pk=default.pk).order_by("pk")):
            for host in upstream.host_names():
                by_host.setdefault(host, upstream)
            if upstream.alias:
                by_alias.setdefault(upstream.alias, upstream)
        found = Table(default, by_host, by_alias)
        _tables.put("table", found, 4096, ttl=TABLE_SECONDS)
    return found


def forget() -> None:
    """Read the upstreams again on the next request (after they were changed)."""
    _tables.forget("table")


def looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def resolve(name: str | None, ns: str | None) -> Route:
    """The upstream for a repository name as the client sent it (None for the catalog)."""
    return Route(*_choose(name, ns))


def route(request: HttpRequest, name: str | None) -> Route:
    """`resolve` for a request; a namespace that chose the upstream is echoed on the response
    (an invalid name's error included)."""
    upstream, repository, namespace = _choose(name, request.GET.get("ns"))
    if namespace:
        request.oci_namespace = namespace
    return Route(upstream, repository, namespace)


def _choose(name: str | None, ns: str | None) -> tuple[Upstream, str | None, str | None]:
    """(upstream, the name within it, the namespace that chose it)."""
    routes = table()
    if ns:
        upstream = routes.by_host.get(ns.lower())
        if upstream is None:
            raise _unknown(ns)
        return upstream, name, ns
    if name and "/" in name:
        first, rest = name.split("/", 1)
        if first in routes.by_alias:
            return routes.by_alias[first], rest, None
        if looks_like_host(first):
            upstream = routes.by_host.get(first.lower())
            if upstream is None:
                raise _unknown(first)
            return upstream, rest, None
    return routes.default, name, None


def _unknown(registry: str) -> UnknownRegistry:
    return UnknownRegistry("no upstream of this mirror answers for this registry", {"registry": registry[:255]})
