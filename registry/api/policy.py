"""Who may pull: the one decision each /v2/ view asks for, made by the access policy the
project composes in (`MIRROR_ACCESS_POLICY` in mirrorsite/settings.py names it).

`registry` knows nothing of users, rules or visibility: it calls `authorize` before it
touches the cache or an upstream, and `readable_repositories` to filter the catalog. Without a
policy configured, everyone may pull everything, as with any registry mirror.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.http import HttpRequest
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from registry.models import Upstream
    from registry.upstreams.routing import Route


class AccessPolicy(Protocol):
    def authorize(self, request: HttpRequest, route: Route | None) -> None:
        """Return if the request may go on; raise the registry error (401, 403...) if not."""

    def readable_repositories(self, request: HttpRequest, upstream: Upstream, names: list[str]) -> list[str]:
        """The repositories of `names` the request may see."""

    def repository_is_private(self, upstream: Upstream, repository: str) -> bool:
        """Whether the upstream keeps `repository` (as it names it) from anonymous clients: a blob
        first cached through it is served elsewhere only to clients who may read it."""


class OpenPolicy:
    def authorize(self, request: HttpRequest, route: Route | None) -> None:
        return None

    def readable_repositories(self, request: HttpRequest, upstream: Upstream, names: list[str]) -> list[str]:
        return names

    def repository_is_private(self, upstream: Upstream, repository: str) -> bool:
        return False  # everyone may read everything


@functools.cache
def current() -> AccessPolicy:
    path = getattr(settings, "MIRROR_ACCESS_POLICY", "")
    policy = import_string(path) if path else OpenPolicy
    return policy() if isinstance(policy, type) else policy


def authorize(request: HttpRequest, route: Route | None) -> None:
    current().authorize(request, route)


def readable_repositories(request: HttpRequest, upstream: Upstream, names: list[str]) -> list[str]:
    return current().readable_repositories(request, upstream, names)


def repository_is_private(upstream: Upstream, repository: str) -> bool:
    return current().repository_is_private(upstream, repository)
