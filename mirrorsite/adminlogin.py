"""The admin's login, rate-limited by the password-guessing limiter every password check of the
mirror goes through (access/attempts.py: per user name and per client address, atomic, shared
through Redis when configured). At the limit, the login page is shown again with a message
that says so, as 429 with Retry-After, and the password is not even checked. A success clears
the user name's count.

The address is the real client's (MIRROR_TRUSTED_PROXIES), so a forged X-Forwarded-For cannot
spread guesses over made-up addresses.
"""

from __future__ import annotations

import logging

from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from access import attempts
from access.clientaddress import client_address

logger = logging.getLogger(__name__)


def lockout_message(retry_after: int) -> str:
    minutes = max(1, round(retry_after / 60))
    return (
        f"Too many failed logins for this username or from your address. Try again in {minutes} "
        f"minute{'s' if minutes != 1 else ''}."
    )


class RateLimitedLoginForm(AdminAuthenticationForm):
    def clean(self) -> dict:
        username = self.cleaned_data.get("username") or ""
        if not username or self.cleaned_data.get("password") is None:
            return super().clean()  # nothing is checked without both
        try:
            attempt = attempts.begin(username, client_address(self.request) if self.request is not None else None)
        except attempts.TooManyAttempts as refused:
            if self.request is not None:
                self.request.login_retry_after = refused.retry_after  # for the view's status
            raise ValidationError(lockout_message(refused.retry_after), code="locked_out") from None
        cleaned = super().clean()  # a ValidationError leaves the attempt counted
        attempt.succeeded()
        return cleaned


def install(site: AdminSite) -> None:
    """Have `site` log in through the limited form, answering 429 (its page, with
    Retry-After) while a login is refused."""
    site.login_form = RateLimitedLoginForm
    login = site.login

    def limited_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = login(request, extra_context)
        retry_after = getattr(request, "login_retry_after", None)
        if retry_after is not None:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response

    site.login = limited_login
