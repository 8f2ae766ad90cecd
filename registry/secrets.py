"""Upstream account secrets, encrypted at rest.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) with a key derived by HKDF from
MIRROR_SECRET_KEY, or from Django's SECRET_KEY when that is unset. Keys listed in
MIRROR_SECRET_KEY_FALLBACKS still decrypt, so the key can be rotated: set the new one, move
the old one to the fallbacks, and secrets are re-encrypted when next written. Plain secrets
exist only in memory, on their way to an upstream; nothing here logs them.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_SALT = b"mirrorsite upstream account secrets"


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys decrypts (the key changed)."""


def _fernet_key(passphrase: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=b"fernet").derive(passphrase.encode())
    return base64.urlsafe_b64encode(derived)


@functools.lru_cache(maxsize=4)
def _cipher(primary: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in (primary, *fallbacks)])


def cipher() -> MultiFernet:
    primary = settings.MIRROR_SECRET_KEY or settings.SECRET_KEY
    return _cipher(primary, tuple(key for key in settings.MIRROR_SECRET_KEY_FALLBACKS if key))


def encrypt(plain: str) -> str:
    return cipher().encrypt(plain.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return cipher().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError):
        raise SecretUnreadable(
            "the stored secret cannot be decrypted with MIRROR_SECRET_KEY (or its fallbacks)"
        ) from None


def decrypt_or_none(token: str) -> str | None:
    """The secret, "" when none is stored, None when it cannot be read."""
    if not token:
        return ""
    try:
        return decrypt(token)
    except SecretUnreadable:
        return None
