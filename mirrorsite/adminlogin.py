"""The admin's login, rate-limited: after MIRROR_ADMIN_LOGIN_ATTEMPTS failures for one
username from one client address, that pair is locked out for MIRROR_ADMIN_LOGIN_LOCKOUT
seconds, with a message that says so. A success clears the count.

Failures are counted in the `login-attempts` cache (Redis when configured, so every process
and replica shares the count). The address is the real client's (MIRROR_TRUSTED_PROXIES),
so a forged X-Forwarded-For cannot spread guesses over made-up addresses.
"""
from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from access.clientaddress import client_address

logger = logging.getLogger(__name__)


class LoginAttempts:
    """Failed logins of one username from one address."""

    def __init__(self, username: str, address: str):
        pair = f"{username.strip().lower()}\0{address}".encode()
        self.key = "failures:" + hashlib.sha256(pair).hexdigest()  # no raw input in cache keys
        self.cache = caches["login-attempts"]

    @classmethod
    def of(cls, request: HttpRequest | None, username: str) -> "LoginAttempts":
        address = client_address(request) if request is not None else None
        return cls(username, str(address) if address is not None else "unknown")

    def failures(self) -> int:
        try:
            return int(self.cache.get(self.key, 0))
        except Exception as error:  # Redis down: logins go on, uncounted, rather than all refused
            logger.warning("cannot read failed admin logins (%s): not limiting them", type(error).__name__)
            return 0

    def locked(self) -> bool:
        limit = settings.MIRROR_ADMIN_LOGIN_ATTEMPTS
        return limit > 0 and self.failures() >= limit

    def failed(self) -> None:
        # The lockout runs from the last failure: each one sets the count's lifetime anew.
        self._write(lambda: self.cache.set(self.key, self.failures() + 1, timeout=settings.MIRROR_ADMIN_LOGIN_LOCKOUT))

    def succeeded(self) -> None:
        self._write(lambda: self.cache.delete(self.key))

    def _write(self, change) -> None:
        try:
            change()
        except Exception as error:
            logger.warning("cannot record an admin login (%s)", type(error).__name__)


def lockout_message() -> str:
    minutes = max(1, round(settings.MIRROR_ADMIN_LOGIN_LOCKOUT / 60))
    return (
        f"Too many failed logins for this username from your address. Try again in {minutes} "
        f"minute{'s' if minutes != 1 else ''}."
    )


class RateLimitedLoginForm(AdminAuthenticationForm):
    def clean(self) -> dict:
        username = self.cleaned_data.get("username") or ""
        attempts = LoginAttempts.of(self.request, username)
        if attempts.locked():
            # Not the username: people type passwords into that field too.
            logger.warning("admin login refused: too many failures from %s", client_address(self.request))
            raise ValidationError(lockout_message(), code="locked_out")
        try:
            cleaned = super().clean()
        except ValidationError:
            attempts.failed()
            raise
        attempts.succeeded()
        return cleaned
