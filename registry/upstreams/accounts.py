"""Which account an upstream's pulls go through, and when that changes.

An upstream's enabled accounts are used one at a time, in their order. The one in use stays
in use while it is good; it hands over to the next one (in order, after it, wrapping round)
when its credentials are rejected, when the upstream answers 429, or when the upstream says
it has MIRROR_ACCOUNT_RATELIMIT_RESERVE pulls left or fewer and another account has more.
Each hand-over is recorded (AccountSwitch) and the upstream's `active_account` says which
account is in use now.

Each process keeps a snapshot of the accounts for a few seconds and applies what it learns
(a rejection, a 429, a rate-limit header) to the snapshot and the database at once, so it
acts on it before the next snapshot; other processes follow within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
import logging
import re

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from registry.memory import AnswerMemory
from registry.models import AccountSwitch, Managed, Upstream, UpstreamAccount
from registry.upstreams.client import RETRY_AFTER_MAX, RateLimit

logger = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 5.0
_snapshots: AnswerMemory[Snapshot] = AnswerMemory(4 * 1024 * 1024)


@dataclass
class AccountState:
    """What choosing an account needs to know of it; changed in place as the process learns."""

    pk: int
    username: str
    secret: str  # as stored: encrypted
    rejected: bool
    cooldown_until: datetime | None
    remaining: int | None
    limit: int | None
    window: int | None
    seen_at: datetime | None

    @property
    def label(self) -> str:
        return self.username or "anonymous"

    def cooling(self, now: datetime) -> bool:
        return self.cooldown_until is not None and self.cooldown_until > now

    def pulls_left(self, now: datetime) -> int | None:
        """What the upstream last said is left; None when it never said, or said so in a
        window that has passed since."""
        if self.remaining is None:
            return None
        if self.window and self.seen_at and now - self.seen_at > timedelta(seconds=self.window):
            return None
        return self.remaining

    def nearly_out(self, now: datetime, reserve: int | None = None) -> bool:
        left = self.pulls_left(now)
        return left is not None and left <= (settings.MIRROR_ACCOUNT_RATELIMIT_RESERVE if reserve is None else reserve)


@dataclass
class Snapshot:
    accounts: list[AccountState]  # enabled ones, in order
    active: int | None  # pk of the account in use, as the database says


def state_of(account: UpstreamAccount) -> AccountState:
    return AccountState(
        account.pk,
        account.username,
        account.secret,
        account.rejected_at is not None,
        account.cooldown_until,
        account.ratelimit_remaining,
        account.ratelimit_limit,
        account.ratelimit_window,
        account.ratelimit_seen_at,
    )


def snapshot(upstream: Upstream) -> Snapshot:
    found = _snapshots.get(upstream.pk)
    if found is None:
        found = _load(upstream)
        _snapshots.put(upstream.pk, found, 1024, ttl=SNAPSHOT_SECONDS)
    return found


def forget(upstream: Upstream) -> None:
    """Read the accounts again on next use (after an admin or the configuration changed them)."""
    _snapshots.forget(upstream.pk)


def _load(upstream: Upstream) -> Snapshot:
    accounts = list(UpstreamAccount.objects.filter(upstream=upstream))
    if not accounts:
        # An upstream without accounts pulls anonymously; the row shows its rate limit.
        try:
            with transaction.atomic():
                accounts = [UpstreamAccount.objects.create(upstream=upstream, username="", managed_by=Managed.ADMIN)]
        except IntegrityError:
            accounts = list(UpstreamAccount.objects.filter(upstream=upstream))
    enabled = sorted((a for a in accounts if a.enabled), key=lambda a: (a.position, a.username == "", a.pk))
    active = Upstream.objects.filter(pk=upstream.pk).values_list("active_account_id", flat=True).first()
    return Snapshot([state_of(a) for a in enabled], active)


def in_order(upstream: Upstream) -> list[AccountState]:
    """The accounts to try for the next request, best first. Rate-limited ones (429, within
    their cooldown) are left out, and so are those whose credentials were rejected, unless
    they are all there is (their password may have been fixed upstream since): a rejected
    account is not asked again while another account may serve soon."""
    snap = snapshot(upstream)
    now = timezone.now()
    states = snap.accounts
    active_index = next((i for i, s in enumerate(states) if s.pk == snap.active), None)
    rotated = states if active_index is None else states[active_index + 1 :] + states[: active_index + 1]
    candidates = [s for s in rotated if not s.cooling(now)]
    good = [s for s in candidates if not s.rejected and not s.nearly_out(now)]
    active = next((s for s in good if s.pk == snap.active), None)
    if active is not None:  # the one in use stays while it is good
        good = [active] + [s for s in good if s is not active]
    low = sorted(
        (s for s in candidates if not s.rejected and s.nearly_out(now)), key=lambda s: -(s.pulls_left(now) or 0)
    )
    if good or low or len(candidates) < len(states):
        return good + low
    return candidates  # every account was rejected: try them again, in order


def cooling_ends(upstream: Upstream) -> datetime | None:
    """When the first rate-limited account may be tried again."""
    now = timezone.now()
    ends = [s.cooldown_until for s in snapshot(upstream).accounts if s.cooling(now)]
    return min(ends) if ends else None


def activate(upstream: Upstream, state: AccountState) -> None:
    """`state` served a request: make it the account in use, recording the switch if another was."""
    snap = snapshot(upstream)
    previous = snap.active
    if previous == state.pk:
        return
    try:
        changed = Upstream.objects.filter(pk=upstream.pk, active_account_id=previous).update(active_account_id=state.pk)
    except DatabaseError:
        logger.warning("could not record the account in use for %s", upstream.name, exc_info=True)
        return
    snap.active = state.pk
    if not changed:
        return  # another process switched first, and recorded it
    if previous is None:
        # Nothing was in use yet: a switch only if the first account was passed over.
        first = snap.accounts[0] if snap.accounts else None
        if first is None or first.pk == state.pk:
            return
        previous = first.pk
    old = next((s for s in snap.accounts if s.pk == previous), None)
    reason = _why_not(old)
    if old is not None:
        old_label = old.label
    else:  # disabled meanwhile: not in the snapshot, still in the database
        username = UpstreamAccount.objects.filter(pk=previous).values_list("username", flat=True).first()
        old_label = username or "anonymous"
    logger.warning(
        "upstream %s: pulls now go through account %s instead of %s: %s", upstream.name, state.label, old_label, reason
    )
    try:
        AccountSwitch.objects.create(
            upstream=upstream,
            from_account_id=previous,
            to_account_id=state.pk,
            from_label=old_label,
            to_label=state.label,
            reason=reason,
        )
    except (DatabaseError, IntegrityError):
        logger.warning("could not record the account switch of %s", upstream.name, exc_info=True)


def _why_not(state: AccountState | None) -> str:
    now = timezone.now()
    if state is None:
        return "account disabled or removed"
    if state.rejected:
        return "credentials rejected"
    if state.cooling(now):
        return f"rate limited (429) until {state.cooldown_until:%Y-%m-%d %H:%M:%S} UTC"
    if state.nearly_out(now):
        return (
            f"{state.pulls_left(now)} pulls left, at or under the reserve of "
            f"{settings.MIRROR_ACCOUNT_RATELIMIT_RESERVE}"
        )
    return "chosen again"


def reconsider(upstream: Upstream) -> AccountState | None:
    """Put the best account in use without a request (after verification found the one in
    use rejected). Returns it, or None when no account is enabled."""
    ordered = in_order(upstream)
    if ordered:
        activate(upstream, ordered[0])
        return ordered[0]
    return None


# --- what requests teach ---------------------------------------------------------------------
def mark_rejected(state: AccountState) -> None:
    state.rejected = True
    _save(state.pk, rejected_at=timezone.now())


def clear_rejection(state: AccountState) -> None:
    if state.rejected:
        state.rejected = False
        _save(state.pk, rejected_at=None)


def mark_rate_limited(state: AccountState, retry_after: str | None) -> None:
    # The upstream's number, as upstream.retry_after checked it: ASCII digits, at most a day.
    digits = retry_after is not None and re.fullmatch(r"[0-9]{1,9}", retry_after)
    seconds = min(int(retry_after), RETRY_AFTER_MAX) if digits else settings.MIRROR_ACCOUNT_COOLDOWN
    state.cooldown_until = timezone.now() + timedelta(seconds=max(seconds, 1))
    _save(state.pk, cooldown_until=state.cooldown_until)


def note_ratelimit(upstream: Upstream, account_id: int, ratelimit: RateLimit) -> None:
    """Keep what the upstream says of an account's rate limit (on every manifest response)."""
    now = timezone.now()
    for state in snapshot(upstream).accounts:
        if state.pk == account_id:
            state.remaining, state.limit, state.window, state.seen_at = (
                ratelimit.remaining,
                ratelimit.limit,
                ratelimit.window,
                now,
            )
    _save(
        account_id,
        ratelimit_limit=ratelimit.limit,
        ratelimit_remaining=ratelimit.remaining,
        ratelimit_window=ratelimit.window,
        ratelimit_seen_at=now,
    )


def _save(pk: int, **fields) -> None:
    try:
        UpstreamAccount.objects.filter(pk=pk).update(**fields)
    except DatabaseError:  # bookkeeping never fails a pull
        logger.warning("could not record the state of upstream account %s", pk, exc_info=True)


def in_use(upstream: Upstream) -> UpstreamAccount | None:
    """The account pulls go through now (for the dashboard and /readyz)."""
    return UpstreamAccount.objects.filter(pk=upstream.active_account_id).first() if upstream.active_account_id else None
