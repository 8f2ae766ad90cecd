"""The registry's error codes: each is an exception a client sees as the JSON error format,
with its status (the OCI distribution spec's table, and Distribution's UNAVAILABLE)."""

from __future__ import annotations

import json


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
