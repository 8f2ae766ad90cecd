"""`authorize(request, route)`: the one call each /v2/ view makes before serving.

It names the requester (`request.registry_user`: the Django user, or None for anonymous),
then applies the access rules to the repository. Refusals are registry errors: 401
UNAUTHORIZED with a Bearer challenge (realm, service, scope) when a login would help and
client authentication is on, 403 DENIED otherwise. The network allow-list has already been
applied by the middleware.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from registry import oci
from registry.models import Upstream
from registry.upstreams.routing import Route

from . import rules, visibility
from .challenge import AuthenticationRequired, challenge
from .clientaddress import client_address
from .credentials import ANONYMOUS, BadCredentials, Requester, identify


def authorize(request: HttpRequest, route: Route | None) -> None:
    """Raise the registry error for a request that may not be served. `route` is the
    repository's (its name valid: routing checked it), or None for endpoints of no repository (/v2/, the catalog)."""
    who = requester_of(request)
    if route is None or route.name is None:
        if settings.MIRROR_AUTH and request.headers.get("Authorization") is None:
            raise AuthenticationRequired("authentication required", challenge(request, None))
        return
    # The upstream's name; a repository the upstream's patterns exclude is refused here
    # (as the proxy would), before anything could ask the upstream about it. The route keeps
    # the answer: the proxy does not check again.
    repository = route.repository
    verdict = rules.decide(
        rules.current_rules(),
        route.upstream.pk,
        repository,
        who,
        lambda: visibility.is_private(route.upstream, repository),
    )
    if verdict is rules.Verdict.ALLOW:
        return
    if verdict is rules.Verdict.DENY:
        raise oci.Denied("you may not pull this repository", {"name": client_name(request, route)})
    if settings.MIRROR_AUTH:
        raise AuthenticationRequired(
            "authentication required", challenge(request, client_name(request, route), error="insufficient_scope")
        )
    raise oci.Denied("this repository is not served to anonymous clients", {"name": client_name(request, route)})


def requester_of(request: HttpRequest) -> Requester:
    """Who sent the request (and `request.registry_user` set to it); anonymous when client
    authentication is off, whatever the request carries. Too many failed passwords for the
    user name or from the address: 429 TOOMANYREQUESTS with Retry-After (access/attempts.py)."""
    request.registry_user = None
    if not settings.MIRROR_AUTH:
        return ANONYMOUS
    try:
        who = identify(
            request.headers.get("Authorization", ""), basic=settings.MIRROR_AUTH_BASIC, address=client_address(request)
        )
    except BadCredentials as error:
        raise AuthenticationRequired(str(error), challenge(request, None, error="invalid_token")) from None
    request.registry_user = who.user
    return who


def readable_repositories(request: HttpRequest, upstream: Upstream, names: list[str]) -> list[str]:
    """Those of `names` (a catalog page, as the upstream names them) the requester may pull,
    judged on what is recorded: a listing never makes the mirror ask the upstream."""
    who = requester_of(request)
    current = rules.current_rules()
    return [
        name
        for name in names
        if rules.decide(current, upstream.pk, name, who, lambda n=name: visibility.is_private(upstream, n, ask=False))
        is rules.Verdict.ALLOW
    ]


def client_name(request: HttpRequest, route: Route) -> str:
    """The repository as the client named it (with an upstream's alias or host prefix)."""
    match = getattr(request, "resolver_match", None)
    return (match.kwargs.get("name") if match is not None else None) or route.name or ""


class RulesPolicy:
    """The access policy mirrorsite composes into registry's /v2/ views (MIRROR_ACCESS_POLICY):
    the allow-list has run, then the rules, the requester and the upstream's visibility decide."""

    authorize = staticmethod(authorize)
    readable_repositories = staticmethod(readable_repositories)
    repository_is_private = staticmethod(visibility.is_private)
