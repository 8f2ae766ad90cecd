"""The REST API's authentication and throttles.

API tokens are checked through the password-guessing limiter (access/attempts.py) per client
address, like every other credential the mirror takes, so guessing tokens on /api/ costs the
same attempts as guessing passwords on /v2/. The throttles bound how many requests a client
makes (anonymous: per address; a user: per user), counted in the `api-throttle` cache (Redis
when configured, so replicas share the count). A throttle whose cache does not answer lets
the request through rather than failing it.
"""

from __future__ import annotations

import logging

from django.core.cache import caches
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import Throttled
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from . import attempts
from .clientaddress import client_address

logger = logging.getLogger(__name__)


class LimitedTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, each check counted against the client's address."""

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # not a token: another authentication (or none) applies
        try:
            attempt = attempts.begin(None, client_address(request._request))
        except attempts.TooManyAttempts as refused:
            raise Throttled(wait=refused.retry_after, detail="Too many failed logins from your address.") from None
        result = super().authenticate(request)  # AuthenticationFailed: the attempt stays counted
        attempt.succeeded()
        return result


class _SharedCacheThrottle:
    """A DRF throttle counting in the `api-throttle` cache, failing open when it is down."""

    def get_cache(self):
        return caches["api-throttle"]

    def get_ident(self, request) -> str:
        address = client_address(request._request if hasattr(request, "_request") else request)
        return str(address) if address is not None else "unknown"

    def allow_request(self, request, view) -> bool:
        self.cache = self.get_cache()
        try:
            return super().allow_request(request, view)
        except Exception as error:  # the cache (Redis) is down: the API goes on, unthrottled
            logger.warning("API throttle not applied: its cache does not answer (%s)", type(error).__name__)
            return True


class AnonymousApiThrottle(_SharedCacheThrottle, AnonRateThrottle):
    pass


class UserApiThrottle(_SharedCacheThrottle, UserRateThrottle):
    pass
