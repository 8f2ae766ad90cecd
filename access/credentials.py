"""Who a request comes from: the mirror's bearer token, or HTTP Basic with a Django user's
password or one of its API tokens (the REST API's, given as the password).

Checking a password is deliberately slow (PBKDF2), and a pull sends dozens of requests, so
a successful Basic check is remembered for a minute in the process (by a hash of the pair,
never the password itself). Every other check first reserves an attempt with the
password-guessing limiter (access/attempts.py), which refuses it (429) without hashing
anything once the user name or the client address has failed too often. Users are re-read
every few seconds, so deactivating one or changing its groups takes effect at once, whatever
tokens it holds.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
import hashlib

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from rest_framework.authtoken.models import Token

from registry.memory import AnswerMemory

from . import attempts, tokens

BASIC_MEMORY_SECONDS = 60.0
USER_MEMORY_SECONDS = 5.0
_basic_checked: AnswerMemory[str] = AnswerMemory(1024 * 1024)
_users: AnswerMemory[Requester] = AnswerMemory(1024 * 1024)


class BadCredentials(Exception):
    """Credentials were presented and are not good (the client must not be served as anonymous)."""


@dataclass(frozen=True)
class Requester:
    user: AbstractBaseUser | None  # None: anonymous
    group_ids: frozenset[int] = frozenset()

    @property
    def is_superuser(self) -> bool:
        return bool(self.user is not None and self.user.is_superuser)


ANONYMOUS = Requester(None)


def identify(authorization: str, *, basic: bool, address: object = None) -> Requester:
    """The requester an Authorization header names; ANONYMOUS without one, or with a token
    issued to an anonymous client. BadCredentials for anything presented that does not hold;
    attempts.TooManyAttempts when a password may not be checked now (`address`: the client's)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        try:
            subject = tokens.verify(value.strip())["sub"]
        except tokens.InvalidToken as error:
            raise BadCredentials(f"invalid token: {error}") from None
        return requester(subject) if subject else ANONYMOUS
    if scheme.lower() == "basic" and basic:
        username, password = parse_basic(value)
        return requester(check_password(username, password, address))
    raise BadCredentials("unsupported authorization scheme")


def parse_basic(value: str) -> tuple[str, str]:
    try:
        username, separator, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("malformed basic credentials") from None
    if not separator or not username:
        raise BadCredentials("malformed basic credentials")
    return username, password


def check_password(username: str, password: str, address: object = None) -> str:
    """The username, when `password` is the user's password or one of its API tokens.
    attempts.TooManyAttempts, before anything is hashed, when the limiter refuses the check."""
    key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
    if _basic_checked.get(key) == username:
        return username
    attempt = attempts.begin(username, address)
    user = authenticate(username=username, password=password)
    if user is None:
        token = Token.objects.select_related("user").filter(key=password).first()
        user = token.user if token is not None and token.user.get_username() == username else None
    if user is None or not user.is_active:
        raise BadCredentials("incorrect username or password")  # the attempt stays counted
    attempt.succeeded()
    _basic_checked.put(key, username, 256, ttl=BASIC_MEMORY_SECONDS)
    return username


def requester(username: str) -> Requester:
    """The active user of that name, with its groups; BadCredentials if there is none."""
    found = _users.get(username)
    if found is None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise BadCredentials("no such active user")
        found = Requester(user, frozenset(user.groups.values_list("pk", flat=True)))
        _users.put(username, found, 1024, ttl=USER_MEMORY_SECONDS)
    return found
