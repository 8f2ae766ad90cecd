"""The OCI distribution vocabulary: repository names, tags, digests, media types and errors.

Everything a client sends is checked here before it touches storage or the network, so a
name or digest that reaches the blob store or an upstream URL is known to be well formed.
Each idea has its module (errors, digests, names, mediatypes); the package names them all, so
callers say `oci.parse_digest`, `oci.NameInvalid`, `oci.OCI_INDEX`.
"""

from registry.oci.digests import (
    DIGEST_ALGORITHMS,
    DIGEST_RE,
    Digest,
    parse_digest,
    sha256_digest,
)
from registry.oci.errors import (
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationInvalid,
    RangeNotSatisfiable,
    RegistryError,
    TagInvalid,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from registry.oci.mediatypes import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    INDEX_MEDIA_TYPES,
    MANIFEST_ACCEPT,
    MANIFEST_MAX_BYTES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestDocument,
)
from registry.oci.names import (
    NAME_MAX_LENGTH,
    NAME_RE,
    TAG_RE,
    Reference,
    parse_reference,
    validate_name,
    validate_tag,
)

__all__ = [
    "BlobUnknown",
    "DIGEST_ALGORITHMS",
    "DIGEST_RE",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "Denied",
    "Digest",
    "DigestInvalid",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MAX_BYTES",
    "MANIFEST_MEDIA_TYPES",
    "ManifestDocument",
    "ManifestInvalid",
    "ManifestUnknown",
    "NAME_MAX_LENGTH",
    "NAME_RE",
    "NameInvalid",
    "NameUnknown",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "PaginationInvalid",
    "RangeNotSatisfiable",
    "Reference",
    "RegistryError",
    "TAG_RE",
    "TagInvalid",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
    "parse_digest",
    "parse_reference",
    "sha256_digest",
    "validate_name",
    "validate_tag",
]
