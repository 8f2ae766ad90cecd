"""The rule matching: first matching rule by position, per upstream, groups, and the default
that keeps private repositories from anonymous clients."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from access.credentials import ANONYMOUS, Requester
from access.rules import Rule, Verdict, decide, first_match

UPSTREAM, OTHER = 1, 2
ALICE = Requester(SimpleNamespace(is_superuser=False), frozenset({10}))  # in group 10
BOB = Requester(SimpleNamespace(is_superuser=False), frozenset({20}))
ROOT = Requester(SimpleNamespace(is_superuser=True), frozenset())

RULES = (
    Rule(1, "team/secret-*", None, "groups", frozenset({10})),
    Rule(2, "team/*", None, "authenticated"),
    Rule(3, "library/*", OTHER, "authenticated"),
    Rule(4, "library/*", None, "public"),
)


class Asked:
    """An `is_private` that counts how often it was asked."""

    def __init__(self, private: bool):
        self.private, self.count = private, 0

    def __call__(self) -> bool:
        self.count += 1
        return self.private


def test_first_matching_rule_by_order_wins():
    assert first_match(RULES, UPSTREAM, "team/secret-app").pk == 1
    assert first_match(RULES, UPSTREAM, "team/app").pk == 2
    assert first_match(RULES, UPSTREAM, "library/alpine").pk == 4
    assert first_match(RULES, OTHER, "library/alpine").pk == 3, "a rule of one upstream applies to it alone"
    assert first_match(RULES, UPSTREAM, "someone/else") is None
    assert first_match(RULES, UPSTREAM, "Team/app") is None, "patterns are case-sensitive, as names are"


@pytest.mark.parametrize(
    "who, repository, expected",
    [
        (ANONYMOUS, "team/secret-app", Verdict.NEEDS_LOGIN),
        (ALICE, "team/secret-app", Verdict.ALLOW),
        (BOB, "team/secret-app", Verdict.DENY),
        (ROOT, "team/secret-app", Verdict.ALLOW),
        (ANONYMOUS, "team/app", Verdict.NEEDS_LOGIN),
        (BOB, "team/app", Verdict.ALLOW),
        (ANONYMOUS, "library/alpine", Verdict.ALLOW),
    ],
)
def test_policies(who, repository, expected):
    assert decide(RULES, UPSTREAM, repository, who, Asked(False)) is expected


def test_a_rule_decides_without_asking_the_upstream():
    asked = Asked(True)
    assert decide(RULES, UPSTREAM, "library/private-but-opened", ANONYMOUS, asked) is Verdict.ALLOW
    assert asked.count == 0, "an explicit public rule opens even a private repository"


def test_without_a_rule_private_repositories_need_a_login(settings):
    settings.MIRROR_ACCESS_DEFAULT_POLICY = "public"
    private, public = Asked(True), Asked(False)
    assert decide(RULES, UPSTREAM, "someone/private", ANONYMOUS, private) is Verdict.NEEDS_LOGIN
    assert decide(RULES, UPSTREAM, "someone/public", ANONYMOUS, public) is Verdict.ALLOW
    users = Asked(True)
    assert decide(RULES, UPSTREAM, "someone/private", BOB, users) is Verdict.ALLOW
    assert users.count == 0, "visibility matters only to anonymous clients"


def test_default_policy_authenticated(settings):
    settings.MIRROR_ACCESS_DEFAULT_POLICY = "authenticated"
    assert decide(RULES, UPSTREAM, "someone/public", ANONYMOUS, Asked(False)) is Verdict.NEEDS_LOGIN
    assert decide(RULES, UPSTREAM, "someone/public", BOB, Asked(False)) is Verdict.ALLOW
