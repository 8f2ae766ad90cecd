"""Content digests: parsed, checked against the algorithms the mirror can verify, computed."""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import re

from registry.oci.errors import DigestInvalid

DIGEST_RE = re.compile(r"^(?P<algorithm>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<encoded>[a-zA-Z0-9=_-]+)\Z")
# Algorithms we can verify, and the exact shape of their hex encoding.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}


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
