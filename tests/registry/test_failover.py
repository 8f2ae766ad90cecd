"""Several accounts per upstream: failover on rejected credentials, on 429 and under the
rate-limit reserve, the switches recorded, verification, and what clients get when every
account is spent. The upstream is a loopback double with a rate limit per account."""

from __future__ import annotations

from datetime import timedelta
import json

from django.utils import timezone
import pytest

from access.models import AccessRule, Policy
from registry import memory, oci
from registry.models import AccountSwitch, Tag, Upstream, UpstreamAccount
from registry.proxy import manifests
from registry.upstreams import accounts, verification
from registry.upstreams.routing import Route
from tests.support.fake_registry import FakeRegistry, Quota, Seen, hub_like
from tests.support.images import build_image

pytestmark = pytest.mark.django_db

KB = 1024
IMAGE = build_image("library/app", "1", layer_sizes=[4 * KB], seed=8100)
USERS = {"spent": "spent-password", "spare": "spare-password", "wrong": "the-right-password"}


@pytest.fixture
def quiet_settings(settings, tmp_path):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_TAG_TTL = 3600
    settings.MIRROR_ACCOUNT_RATELIMIT_RESERVE = 0
    settings.MIRROR_ACCOUNT_COOLDOWN = 600
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 1
    return settings


def upstream_with(url: str, *logins: tuple[str, str], alias: str = "lim") -> Upstream:
    upstream = Upstream.objects.create(name="limited", url=url, alias=alias, library_prefix=True)
    for position, (username, password) in enumerate(logins):
        account = UpstreamAccount(upstream=upstream, username=username, position=position)
        account.set_secret(password)
        account.save()
    return upstream


def account(username: str) -> UpstreamAccount:
    return UpstreamAccount.objects.get(username=username)


def pull(upstream: Upstream, repository: str) -> manifests.ManifestResult:
    """A cold pull of a tag: one manifest GET upstream."""
    return manifests.get_manifest(Route(upstream, repository), oci.parse_reference("1"))


def manifest_gets(registry: FakeRegistry, user: str | None = None) -> list[Seen]:
    """The manifest GETs that reached the registry, of `user`'s account or of all."""
    return [s for s in registry.seen(method="GET", kind="manifests") if user is None or s.user == user]


def token_answers(registry: FakeRegistry) -> list[tuple[str | None, int | None]]:
    """(login, status) of each token request: the login "" when anonymous."""
    return [(s.user, s.status) for s in registry.seen("/token")]


def test_rejected_then_rate_limited_accounts_hand_over_and_pulls_keep_working(quiet_settings):
    quotas = {"spent": Quota(pulls=2, reported=100), "spare": Quota(pulls=100, reported=100)}
    with hub_like(IMAGE, USERS, quotas) as registry:
        upstream = upstream_with(
            registry.url, ("wrong", "not-the-password"), ("spent", USERS["spent"]), ("spare", USERS["spare"])
        )
        for i in range(4):
            assert pull(upstream, f"app{i}").digest == IMAGE.digest

        # The wrong password is tried once, then left aside; `spent` served two pulls, then `spare`.
        assert token_answers(registry).count(("wrong", 401)) == 1
        assert [r.status for r in manifest_gets(registry, "spent")] == [200, 200, 429]
        assert [r.status for r in manifest_gets(registry, "spare")] == [200, 200]
    switches = list(AccountSwitch.objects.order_by("pk").values_list("from_label", "to_label", "reason"))
    assert [(a, b) for a, b, _ in switches] == [("wrong", "spent"), ("spent", "spare")]
    assert switches[0][2] == "credentials rejected"
    assert switches[1][2].startswith("rate limited (429) until")
    upstream.refresh_from_db()
    assert upstream.active_account == account("spare")
    assert account("wrong").rejected_at is not None
    spent = account("spent")
    assert spent.cooldown_until > timezone.now() + timedelta(seconds=20), "Retry-After: 30 is honoured"
    assert (spent.ratelimit_remaining, spent.ratelimit_limit, spent.ratelimit_window) == (0, 100, 21600)
    assert account("spare").ratelimit_remaining == 98


def test_an_account_under_the_reserve_hands_over_before_its_429(quiet_settings):
    quiet_settings.MIRROR_ACCOUNT_RATELIMIT_RESERVE = 5
    quotas = {"spent": Quota(pulls=100, reported=7), "spare": Quota(pulls=100, reported=100)}
    with hub_like(IMAGE, USERS, quotas) as registry:
        upstream = upstream_with(registry.url, ("spent", USERS["spent"]), ("spare", USERS["spare"]))
        for i in range(4):
            pull(upstream, f"app{i}")
        assert len(manifest_gets(registry, "spent")) == 2, "7 - 2 = 5 left: the reserve is kept"
        assert not any(r.status == 429 for r in registry.requests)
    (switch,) = AccountSwitch.objects.all()
    assert (switch.from_label, switch.to_label) == ("spent", "spare")
    assert switch.reason == "5 pulls left, at or under the reserve of 5"


def test_every_account_spent_is_429_with_retry_after_and_cached_tags_go_stale(client, quiet_settings):
    # The fake upstream grants no anonymous pulls: a rule opens it to this test's anonymous client.
    AccessRule.objects.create(pattern="*", policy=Policy.PUBLIC)
    quotas = {"spent": Quota(pulls=1, reported=100)}
    with hub_like(IMAGE, USERS, quotas, retry_after="120") as registry:
        upstream_with(registry.url, ("spent", USERS["spent"]))
        assert client.get("/v2/lim/cached/manifests/1").status_code == 200
        Tag.objects.update(validated_at=timezone.now() - timedelta(hours=2))
        memory.forget_all()

        refused = client.get("/v2/lim/uncached/manifests/1")
        assert refused.status_code == 429
        assert json.loads(refused.content)["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 100 <= int(refused["Retry-After"]) <= 120
        asked = len(registry.requests)

        stale = client.get("/v2/lim/cached/manifests/1")  # revalidation is refused too: served stale
        assert stale.status_code == 200 and "Stale" in stale["Warning"]
        again = client.get("/v2/lim/other/manifests/1")
        assert again.status_code == 429
        assert len(registry.requests) == asked, "a rate-limited account is left alone until its Retry-After"


def test_a_rejected_account_is_not_asked_again_while_another_cools_down(quiet_settings):
    with hub_like(IMAGE, USERS, {"spent": Quota(pulls=1, reported=100)}) as registry:
        upstream = upstream_with(registry.url, ("wrong", "not-the-password"), ("spent", USERS["spent"]))
        pull(upstream, "app0")
        for i in (1, 2, 3):
            with pytest.raises(oci.TooManyRequests):
                pull(upstream, f"app{i}")
        assert token_answers(registry).count(("wrong", 401)) == 1
        assert [r.status for r in manifest_gets(registry, "spent")] == [200, 429]


def test_verification_finds_the_wrong_password_and_puts_the_next_account_in_use(quiet_settings):
    with hub_like(IMAGE, USERS) as registry:
        upstream = upstream_with(registry.url, ("wrong", "not-the-password"), ("spare", USERS["spare"]), ("", ""))
        assert verification.verify_all() == "2 ok, 1 rejected"
        assert manifest_gets(registry) == [], "verifying pulls nothing"
    wrong, spare, anonymous = account("wrong"), account("spare"), account("")
    assert (wrong.verification, spare.verification, anonymous.verification) == ("rejected", "ok", "ok")
    assert anonymous.verification_message == "token issued (anonymous)"
    assert wrong.rejected_at is not None and wrong.verified_at is not None
    upstream.refresh_from_db()
    assert upstream.active_account == spare and upstream.reachable is True
    (switch,) = AccountSwitch.objects.all()
    assert (switch.from_label, switch.to_label, switch.reason) == ("wrong", "spare", "credentials rejected")


def test_a_fixed_password_verifies_again(quiet_settings):
    with hub_like(IMAGE, USERS) as registry:
        upstream_with(registry.url, ("wrong", "not-the-password"))
        verification.verify_all()
        assert account("wrong").rejected_at is not None
        fixed = account("wrong")
        fixed.set_secret(USERS["wrong"])
        fixed.save()
        verification.verify_all()
    assert account("wrong").verification == "ok" and account("wrong").rejected_at is None


def test_an_unreachable_upstream_is_recorded_not_blamed_on_the_account(quiet_settings):
    upstream = upstream_with("http://127.0.0.1:9", ("spare", USERS["spare"]))
    verification.verify_all()
    assert account("spare").verification == "unreachable"
    assert account("spare").rejected_at is None
    upstream.refresh_from_db()
    assert upstream.reachable is False and upstream.checked_at is not None


def test_no_enabled_account_is_unavailable(client, quiet_settings):
    with hub_like(IMAGE, USERS) as registry:
        upstream = upstream_with(registry.url, ("spare", USERS["spare"]))
        UpstreamAccount.objects.update(enabled=False)
        accounts.forget(upstream)
        response = client.get("/v2/lim/app/manifests/1")
        assert response.status_code == 503
        assert "no enabled account" in json.loads(response.content)["errors"][0]["message"]
        assert registry.requests == []


def test_an_upstream_without_accounts_pulls_anonymously(quiet_settings):
    with hub_like(IMAGE, USERS, {"": Quota(pulls=10, reported=10)}) as registry:
        upstream = Upstream.objects.create(name="anon", url=registry.url)
        assert pull(upstream, "library/app").digest == IMAGE.digest
        assert [r.user for r in manifest_gets(registry) if r.status == 200] == [""]
    (anonymous,) = UpstreamAccount.objects.filter(upstream=upstream)
    assert anonymous.username == "" and anonymous.ratelimit_remaining == 9


def test_each_request_is_counted_for_the_account_that_made_it(quiet_settings):
    quiet_settings.MIRROR_PULL_TIME_FLUSH_INTERVAL = 3600
    from registry.signals import upstream_request
    from registry.upstreams import usage as accountusage

    accountusage.flush()  # what earlier tests left: their accounts are gone
    heard = []

    def listener(sender, **kwargs):
        heard.append((kwargs["username"], kwargs["method"], kwargs["kind"], kwargs["outcome"]))

    upstream_request.connect(listener)
    try:
        with hub_like(IMAGE, USERS) as registry:
            upstream = upstream_with(registry.url, ("spare", USERS["spare"]))
            pull(upstream, "library/app")
            with pytest.raises(oci.ManifestUnknown):
                manifests.get_manifest(Route(upstream, "library/app"), oci.parse_reference("nope"))
        accountusage.flush()
    finally:
        upstream_request.disconnect(listener)
    assert heard == [("spare", "GET", "manifest", "ok"), ("spare", "GET", "manifest", "MANIFEST_UNKNOWN")]
    spare = account("spare")
    assert (spare.requests_made, spare.pulls_made) == (2, 1) and spare.last_used_at is not None
