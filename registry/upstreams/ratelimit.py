"""Whether the upstream's rate limit leaves room for work nobody is waiting for.

The upstream client records `ratelimit-remaining` on each account after every response, so
the last word of the upstream is in the database. Workers stop when no usable account of the
upstream has more than MIRROR_PREFETCH_RATELIMIT_RESERVE pulls left: the rest belongs to
clients. (Pulls themselves move on to the next account at MIRROR_ACCOUNT_RATELIMIT_RESERVE,
see accounts.py.)
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from registry.models import Upstream, UpstreamAccount
from registry.upstreams.accounts import state_of


def nearly_spent(upstream: Upstream) -> str | None:
    """Why background pulls must stop now, or None when they may go on."""
    now = timezone.now()
    states = [state_of(account) for account in UpstreamAccount.objects.filter(upstream=upstream, enabled=True)]
    usable = [state for state in states if not state.rejected]
    if usable and all(state.cooling(now) for state in usable):
        return "upstream rate limit reached (429) for every account"
    usable = [state for state in usable if not state.cooling(now)]
    if not usable:
        return None  # nothing known to be limited: let the pull path report what is wrong
    reserve = settings.MIRROR_PREFETCH_RATELIMIT_RESERVE
    lefts = [state.pulls_left(now) for state in usable]
    if any(left is None or left > reserve for left in lefts):
        return None  # an account the upstream never said it limits, or with pulls to spare
    best = max(usable, key=lambda state: state.pulls_left(now))
    limit = f" of {best.limit}" if best.limit is not None else ""
    accounts = f" (the best of {len(usable)} accounts)" if len(usable) > 1 else ""
    return (
        f"upstream rate limit nearly spent: {best.pulls_left(now)}{limit} pulls left{accounts}, "
        f"{reserve} kept for clients"
    )
