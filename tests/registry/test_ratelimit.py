"""When background pulls must leave the upstream's rate limit to clients."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
import pytest

from registry.models import Upstream, UpstreamAccount
from registry.upstreams import ratelimit

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(settings) -> UpstreamAccount:
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    settings.REGISTRY_PROXY_USERNAME = "bot"
    settings.MIRROR_PREFETCH_RATELIMIT_RESERVE = 10
    Upstream.objects.default()
    return UpstreamAccount.objects.get(username="bot")


def set_limit(
    account: UpstreamAccount, remaining: int | None, *, seen_ago: timedelta = timedelta(), window: int | None = 21600
):
    UpstreamAccount.objects.filter(pk=account.pk).update(
        ratelimit_limit=100,
        ratelimit_remaining=remaining,
        ratelimit_window=window,
        ratelimit_seen_at=timezone.now() - seen_ago,
    )


def test_no_limit_reported_means_go_on(account):
    assert ratelimit.nearly_spent(account.upstream) is None


def test_the_reserve_is_left_to_clients(account):
    set_limit(account, 11)
    assert ratelimit.nearly_spent(account.upstream) is None
    set_limit(account, 10)
    assert ratelimit.nearly_spent(account.upstream) == (
        "upstream rate limit nearly spent: 10 of 100 pulls left, 10 kept for clients"
    )


def test_a_count_from_a_window_that_has_passed_does_not_hold_back(account):
    set_limit(account, 0, seen_ago=timedelta(hours=7))
    assert ratelimit.nearly_spent(account.upstream) is None
    set_limit(account, 0, seen_ago=timedelta(hours=5))
    assert ratelimit.nearly_spent(account.upstream)
    set_limit(account, 0, seen_ago=timedelta(days=30), window=None)  # no window said: the count stands
    assert ratelimit.nearly_spent(account.upstream)


def test_another_account_with_pulls_to_spare_lets_the_work_go_on(account):
    set_limit(account, 0)
    other = UpstreamAccount.objects.create(upstream=account.upstream, username="second", position=1)
    set_limit(other, 50)
    assert ratelimit.nearly_spent(account.upstream) is None
    UpstreamAccount.objects.filter(pk=other.pk).update(enabled=False)  # a disabled account does not count
    assert ratelimit.nearly_spent(account.upstream)
    UpstreamAccount.objects.filter(pk=other.pk).update(enabled=True)
    set_limit(other, 3)
    assert ratelimit.nearly_spent(account.upstream) == (
        "upstream rate limit nearly spent: 3 of 100 pulls left (the best of 2 accounts), 10 kept for clients"
    )


def test_every_account_answered_429(account):
    UpstreamAccount.objects.filter(pk=account.pk).update(cooldown_until=timezone.now() + timedelta(minutes=5))
    assert ratelimit.nearly_spent(account.upstream) == "upstream rate limit reached (429) for every account"
    UpstreamAccount.objects.filter(pk=account.pk).update(cooldown_until=timezone.now() - timedelta(seconds=1))
    assert ratelimit.nearly_spent(account.upstream) is None
