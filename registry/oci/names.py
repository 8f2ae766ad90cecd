"""Repository names, tags and manifest references, checked against the spec's grammar."""

from __future__ import annotations

from dataclasses import dataclass
import re

from registry.oci.digests import Digest, parse_digest
from registry.oci.errors import NameInvalid, TagInvalid

# Grammar from the OCI distribution spec. `\Z`, not `$`: `$` also matches before a final newline.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
# Distribution's limit; also keeps paths and URLs bounded.
NAME_MAX_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > NAME_MAX_LENGTH or not NAME_RE.match(name):
        raise NameInvalid("invalid repository name", {"name": name[:NAME_MAX_LENGTH]})
    return name


def validate_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise TagInvalid("invalid tag", {"tag": tag[:200]})
    return tag


@dataclass(frozen=True)
class Reference:
    """The `<reference>` of a manifest URL: a tag or a digest."""

    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        return self.tag if self.tag is not None else str(self.digest)


def parse_reference(value: str) -> Reference:
    if ":" in value:
        return Reference(digest=parse_digest(value))
    return Reference(tag=validate_tag(value))
