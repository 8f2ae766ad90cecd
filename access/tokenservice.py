"""The token endpoint's logic (`/v2/token`): who asks, for what, and what is granted.

GET with HTTP Basic (or nothing, for an anonymous token) is what docker, skopeo, podman
and containerd send after a Bearer challenge; POST is the OAuth2 password grant some
clients (containerd) try first. Each repository scope is granted `pull` when the rules let
the requester pull it, judged on what is recorded: issuing a token never asks an upstream
anything (whether an upstream serves a repository to anyone is asked when it is pulled). The
token itself names the requester, and every /v2/ request is judged again by the rules, so a
token outlives no change of rules, groups or accounts. A request names at most
MIRROR_AUTH_MAX_SCOPES scopes, so one request cannot make the mirror judge hundreds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from registry import oci
from registry.upstreams import routing

from . import rules, tokens, visibility
from .credentials import Requester, check_password, identify, requester


class TokenRequestInvalid(Exception):
    """A request the endpoint cannot answer with a token (unknown service or grant)."""


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """`repository:name:pull,push` scopes (several per value, space-separated); the name may
    contain ':' (a host:port prefix). Malformed ones are left out, as registries do."""
    found = []
    for value in values:
        for item in value.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name:
                found.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return found


def requester_from_basic(authorization: str, address: object = None) -> Requester:
    """The requester of a token request: anonymous without Authorization, else Basic
    credentials (or a token of ours) that must hold (BadCredentials otherwise)."""
    return identify(authorization, basic=True, address=address)


def requester_from_password(username: str, password: str, address: object = None) -> Requester:
    return requester(check_password(username, password, address))


def check_scope_count(scopes: list[Scope]) -> None:
    """TokenRequestInvalid past MIRROR_AUTH_MAX_SCOPES (checked before any password)."""
    if len(scopes) > settings.MIRROR_AUTH_MAX_SCOPES:
        raise TokenRequestInvalid(
            f"too many scopes: {len(scopes)} in one request, at most {settings.MIRROR_AUTH_MAX_SCOPES}"
        )


def grant(who: Requester, service: str | None, scopes: list[Scope]) -> tokens.IssuedToken:
    if service and service != settings.MIRROR_AUTH_SERVICE:
        raise TokenRequestInvalid(f"unknown service {service[:100]!r}")
    check_scope_count(scopes)
    access = []
    for scope in scopes:
        if scope.type == "repository" and "pull" in scope.actions and _may_pull(who, scope.name):
            access.append({"type": "repository", "name": scope.name, "actions": ["pull"]})
    username = who.user.get_username() if who.user is not None else ""
    return tokens.issue(username, access)


def _may_pull(who: Requester, name: str) -> bool:
    try:
        route = routing.resolve(name, None)
        repository = route.repository
        verdict = rules.decide(
            rules.current_rules(),
            route.upstream.pk,
            repository,
            who,
            # What is recorded only: a repository never judged is not listed for an anonymous
            # client, and /v2/ asks the upstream when it is pulled.
            lambda: visibility.is_private(route.upstream, repository, ask=False),
        )
    except oci.RegistryError:  # no such registry, name or repository: nothing to grant
        return False
    return verdict is rules.Verdict.ALLOW
