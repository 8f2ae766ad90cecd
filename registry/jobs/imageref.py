"""Image references and platforms as staff type them.

`postgres:17`, `library/postgres@sha256:…`, `docker.io/library/postgres:17` (a registry host
first selects the configured upstream of that host), and platforms like `linux/arm64/v8`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from registry import oci
from registry.models import DOCKER_HUB_HOSTS, Upstream, is_docker_hub


class ImageRefInvalid(ValueError):
    """Not an image reference, or one for a registry that is not a configured upstream."""


@dataclass(frozen=True)
class ImageRef:
    upstream: Upstream
    repository: str  # as the upstream knows it (library/postgres)
    reference: oci.Reference

    def __str__(self) -> str:
        separator = "@" if self.reference.digest is not None else ":"
        return f"{self.repository}{separator}{self.reference}"


def parse_image(text: str, upstream: Upstream | None = None) -> ImageRef:
    """`[host/]name[:tag|@digest]`, the tag defaulting to `latest` as with `docker pull`."""
    text = text.strip()
    name, _, digest = text.partition("@")
    tag = None
    if not digest:
        slash, colon = name.rfind("/"), name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        upstream, name = _upstream_for_host(first), rest
    upstream = upstream or Upstream.objects.default()
    try:
        reference = oci.parse_reference(digest) if digest else oci.Reference(tag=oci.validate_tag(tag or "latest"))
        repository = upstream.upstream_name(oci.validate_name(name))
    except oci.RegistryError as error:
        raise ImageRefInvalid(f"{text!r}: {error.message}") from None
    return ImageRef(upstream, repository, reference)


def _upstream_for_host(host: str) -> Upstream:
    """The upstream answering for a registry host (its host names, or its URL's host)."""
    host = host.lower()
    for upstream in Upstream.objects.order_by("pk"):
        upstream_host = urlsplit(upstream.url).netloc.lower()
        if (
            host == upstream_host
            or host in upstream.host_names()
            or (host in DOCKER_HUB_HOSTS and is_docker_hub(upstream.url))
        ):
            return upstream
    raise ImageRefInvalid(f"{host} is not a configured upstream")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None  # None matches any variant

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def matches(self, platform: object) -> bool:
        """Whether an index entry's `platform` object is this platform."""
        if not isinstance(platform, dict):
            return False
        if (platform.get("os"), platform.get("architecture")) != (self.os, self.architecture):
            return False
        return self.variant is None or platform.get("variant") == self.variant


def parse_platforms(values: Iterable[str]) -> list[Platform]:
    """`linux/amd64,linux/arm64/v8` (or several such values) → platforms; empty means all."""
    platforms = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            parts = item.split("/")
            if len(parts) not in (2, 3) or not all(parts):
                raise ImageRefInvalid(f"{item!r} is not a platform: use os/architecture[/variant]")
            platforms.append(Platform(*parts))
    return platforms


def format_platforms(platforms: Iterable[Platform]) -> str:
    return ",".join(str(platform) for platform in platforms)


def platform_of(entry: dict) -> Platform | None:
    platform = entry.get("platform")
    if not isinstance(platform, dict) or not platform.get("os") or not platform.get("architecture"):
        return None
    return Platform(str(platform["os"]), str(platform["architecture"]), platform.get("variant") or None)
