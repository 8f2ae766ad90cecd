"""Whether the upstream's rate limit leaves room for work nobody is waiting for.

The upstream client records `ratelimit-remaining` on the account after every response, so
the last word of the upstream is in the database. Workers stop when at most
MIRROR_PREFETCH_RATELIMIT_RESERVE pulls are left: the rest belongs to clients.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import Upstream, UpstreamAccount


def nearly_spent(upstream: Upstream) -> str | None:
    """Why background pulls must stop now, or None when they may go on."""
    account = UpstreamAccount.objects.filter(upstream=upstream, username=settings.REGISTRY_PROXY_USERNAME).first()
    if account is None or account.ratelimit_remaining is None:
        return None  # the upstream never said it limits us
    if account.ratelimit_window and account.ratelimit_seen_at:
        if timezone.now() - account.ratelimit_seen_at > timedelta(seconds=account.ratelimit_window):
            return None  # the window it was counted in has passed
    reserve = settings.MIRROR_PREFETCH_RATELIMIT_RESERVE
    if account.ratelimit_remaining > reserve:
        return None
    limit = f" of {account.ratelimit_limit}" if account.ratelimit_limit is not None else ""
    return (
        f"upstream rate limit nearly spent: {account.ratelimit_remaining}{limit} pulls left, "
        f"{reserve} kept for clients"
    )
