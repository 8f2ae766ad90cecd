"""Manifest media types, and a manifest's JSON read once (its type, references, sizes, entries)."""

from __future__ import annotations

from dataclasses import dataclass
import json

from registry.oci.digests import DIGEST_RE
from registry.oci.errors import ManifestInvalid

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
