"""The OCI distribution vocabulary: repository names, tags, digests, media types and errors.

Everything a client sends is checked here before it touches storage or the network, so a
name or digest that reaches the blob store or an upstream URL is known to be well formed.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import json
import re

# Grammar from the OCI distribution spec. `\Z`, not `$`: `$` also matches before a final newline.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"^(?P<algorithm>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<encoded>[a-zA-Z0-9=_-]+)\Z")
# Distribution's limit; also keeps paths and URLs bounded.
NAME_MAX_LENGTH = 255

# Algorithms we can verify, and the exact shape of their hex encoding.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}

MANIFEST_MAX_BYTES = 4 * 1024 * 1024

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
# What we ask upstreams for: every modern manifest kind, so the cache holds the canonical
# object (an index for a multi-platform tag) whatever the first client accepted.
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)


class RegistryError(Exception):
    """An error a client sees as the registry JSON error format."""

    code = "UNKNOWN"
    status = 500

    def __init__(self, message: str, detail: object = None, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        if status is not None:
            self.status = status

    def as_json(self) -> bytes:
        error = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()


class NameInvalid(RegistryError):
    code, status = "NAME_INVALID", 400


class TagInvalid(RegistryError):
    code, status = "TAG_INVALID", 400


class DigestInvalid(RegistryError):
    code, status = "DIGEST_INVALID", 400


class RangeNotSatisfiable(RegistryError):
    code, status = "RANGE_INVALID", 416


class NameUnknown(RegistryError):
    code, status = "NAME_UNKNOWN", 404


class ManifestUnknown(RegistryError):
    code, status = "MANIFEST_UNKNOWN", 404


class ManifestInvalid(RegistryError):
    code, status = "MANIFEST_INVALID", 502


class BlobUnknown(RegistryError):
    code, status = "BLOB_UNKNOWN", 404


class Unauthorized(RegistryError):
    code, status = "UNAUTHORIZED", 401


class Denied(RegistryError):
    code, status = "DENIED", 403


class TooManyRequests(RegistryError):
    code, status = "TOOMANYREQUESTS", 429


class Unsupported(RegistryError):
    code, status = "UNSUPPORTED", 405


class PaginationInvalid(RegistryError):
    code, status = "PAGINATION_NUMBER_INVALID", 400


class Unavailable(RegistryError):
    """The upstream could not be reached and nothing usable is cached (Distribution's code)."""

    code, status = "UNAVAILABLE", 503


@dataclass(frozen=True)
class Digest:
    algorithm: str
    encoded: str

    def __post_init__(self) -> None:
        # Digests name files (blobs/<algorithm>/<ab>/<encoded>): only verifiable ones exist.
        if DIGEST_ALGORITHMS.get(self.algorithm) != len(self.encoded) or not re.fullmatch(r"[a-f0-9]+", self.encoded):
            raise DigestInvalid("invalid digest", {"digest": f"{self.algorithm}:{self.encoded}"[:200]})

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def matches(self, content: bytes) -> bool:
        return hashlib.new(self.algorithm, content).hexdigest() == self.encoded


def parse_digest(value: str) -> Digest:
    """A digest we can verify, or DigestInvalid."""
    match = DIGEST_RE.match(value)
    if not match:
        raise DigestInvalid("invalid digest", {"digest": value[:200]})
    algorithm, encoded = match["algorithm"], match["encoded"]
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise DigestInvalid("unsupported digest algorithm", {"digest": value[:200]})
    if len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise DigestInvalid("invalid digest", {"digest": value[:200]})
    return Digest(algorithm, encoded)


def sha256_digest(content: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(content).hexdigest())


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


@dataclass(frozen=True)
class ManifestDocument:
    """A manifest's JSON, parsed once: its media type, what it references, its descriptors'
    sizes and an index's entries are all read from the one parse (a fill parses once, and
    passes this along)."""

    json: object  # what the bytes parse to; None when they are no JSON at all

    @classmethod
    def parse(cls, content: bytes) -> ManifestDocument:
        try:
            return cls(json.loads(content))
        except ValueError:
            return cls(None)

    @property
    def _object(self) -> dict | None:
        return self.json if isinstance(self.json, dict) else None

    def references(self) -> tuple[list[str], list[str]]:
        """The (blob digests, child manifest digests) the manifest points at.

        Only well-formed digests are returned; a malformed manifest yields nothing rather than
        an error, because the bytes are already verified against their digest and clients
        decide what they accept.
        """
        document = self._object
        if document is None:
            return [], []

        def digests(descriptors: object) -> list[str]:
            found = []
            for descriptor in descriptors if isinstance(descriptors, list) else []:
                value = descriptor.get("digest") if isinstance(descriptor, dict) else None
                if isinstance(value, str) and DIGEST_RE.match(value):
                    found.append(value)
            return found

        blobs = digests([document.get("config")]) + digests(document.get("layers"))
        children = digests(document.get("manifests"))
        return blobs, children

    def blob_descriptors(self) -> list[dict]:
        """The config and layer descriptors (those that are JSON objects), in manifest order."""
        document = self._object
        if document is None:
            return []
        layers = document.get("layers")
        descriptors = [document.get("config")] + (layers if isinstance(layers, list) else [])
        return [descriptor for descriptor in descriptors if isinstance(descriptor, dict)]

    def descriptor_sizes(self) -> dict[str, int]:
        """digest → size of the config and layer descriptors; a size that is not a non-negative
        integer is left out."""
        sizes: dict[str, int] = {}
        for descriptor in self.blob_descriptors():
            digest, size = descriptor.get("digest"), descriptor.get("size")
            if isinstance(digest, str) and type(size) is int and size >= 0:
                sizes.setdefault(digest, size)
        return sizes

    def index_entries(self) -> list[dict] | None:
        """The entries of an index (each with a valid digest), or None when this is no index."""
        _, children = self.references()
        if not children:
            return None
        return [
            entry for entry in self.json["manifests"] if isinstance(entry, dict) and entry.get("digest") in children
        ]

    def media_type(self, declared: str | None) -> str:
        """The media type to store and serve an upstream manifest with; ManifestInvalid when the
        upstream sent something else.

        Only the four registry manifest types are ever served (the type goes out as the answer's
        Content-Type, so a `text/html` would make the mirror's origin run an upstream's script).
        The upstream's header decides when it names one of them; a bare `application/json`, or no
        header, lets the document decide (its `mediaType`, else its shape). A document must be a
        JSON object, and a `mediaType` it declares must be a manifest type too.
        """
        document = self._object
        if document is None:
            raise ManifestInvalid("upstream manifest is not a JSON object")
        media_type = document.get("mediaType")
        if media_type is not None and media_type not in MANIFEST_MEDIA_TYPES:
            raise ManifestInvalid(
                "upstream manifest declares a media type that is not a manifest's", {"mediaType": str(media_type)[:100]}
            )
        header = (declared or "").split(";")[0].strip().lower()
        if header in MANIFEST_MEDIA_TYPES:
            return header
        if header not in ("", "application/json"):
            raise ManifestInvalid(
                "upstream manifest sent with a media type that is not a manifest's", {"contentType": header[:100]}
            )
        if media_type is not None:
            return media_type
        if "manifests" in document:
            return OCI_INDEX
        return OCI_MANIFEST
