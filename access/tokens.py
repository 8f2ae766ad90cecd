"""The mirror's own bearer tokens: short-lived JWTs (HS256) that /v2/token issues and /v2/ accepts.

The signing key is derived from MIRROR_AUTH_TOKEN_KEY (else DJANGO_SECRET_KEY), so it is not
the secret itself; the audience is MIRROR_AUTH_SERVICE and the issuer this mirror. A token
says who it was issued to (`sub`, empty for an anonymous client) and what was granted
(`access`, as in Distribution's token specification).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
import hashlib
import hmac
import uuid

from django.conf import settings
import jwt

ISSUER = "mirrorsite"
ALGORITHM = "HS256"
# Replicas' clocks differ a little: a token issued (iat/nbf) or expiring (exp) this many
# seconds off this process's clock still holds.
LEEWAY_SECONDS = 30
_KEY_PURPOSE = b"mirrorsite registry bearer tokens"


class InvalidToken(Exception):
    """Expired, forged, tampered with, or meant for another service."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: datetime


def signing_key() -> bytes:
    secret = (settings.MIRROR_AUTH_TOKEN_KEY or settings.SECRET_KEY).encode()
    return hmac.new(secret, _KEY_PURPOSE, hashlib.sha256).digest()


def issue(subject: str, access: list[dict], *, lifetime: int | None = None, now: datetime | None = None) -> IssuedToken:
    """A signed token for `subject` (a username, or "" for anonymous)."""
    lifetime = settings.MIRROR_AUTH_TOKEN_LIFETIME if lifetime is None else lifetime
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    at = int(issued.timestamp())
    claims = {
        "iss": ISSUER,
        "aud": settings.MIRROR_AUTH_SERVICE,
        "sub": subject,
        "iat": at,
        "nbf": at,
        "exp": at + lifetime,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    return IssuedToken(jwt.encode(claims, signing_key(), algorithm=ALGORITHM), lifetime, issued)


def verify(token: str) -> dict:
    """The claims of a token this mirror issued and that is still valid, else InvalidToken."""
    try:
        return jwt.decode(
            token,
            signing_key(),
            algorithms=[ALGORITHM],
            audience=settings.MIRROR_AUTH_SERVICE,
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "sub", "iat", "exp"]},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from None
