"""Which rule decides a repository, and what it decides for a requester.

The first access rule (by position) whose pattern and upstream match decides. With none,
MIRROR_ACCESS_DEFAULT_POLICY does, and its "public" has one exception: a repository the
upstream serves only to the mirror's own account (private) needs a logged-in user, so the
account's reach is never handed to anonymous clients unless an admin rule says public.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import enum
import fnmatch

from django.conf import settings

from registry.memory import AnswerMemory

from .credentials import Requester
from .models import AccessRule, Policy

RULES_SECONDS = 10.0  # how long a process trusts its copy of the rules (admin edits show after this)
_rules: AnswerMemory[tuple[Rule, ...]] = AnswerMemory(4 * 1024 * 1024)


class Verdict(enum.Enum):
    ALLOW = "allow"
    NEEDS_LOGIN = "needs login"  # anonymous, and the repository wants a user
    DENY = "deny"  # a user, not one the repository admits


@dataclass(frozen=True)
class Rule:
    pk: int | None
    pattern: str
    upstream_id: int | None
    policy: str
    group_ids: frozenset[int] = frozenset()

    def matches(self, upstream_id: int, repository: str) -> bool:
        return (self.upstream_id is None or self.upstream_id == upstream_id) and fnmatch.fnmatchcase(
            repository, self.pattern
        )


def current_rules() -> tuple[Rule, ...]:
    found = _rules.get("rules")
    if found is None:
        found = tuple(
            Rule(
                rule.pk, rule.pattern, rule.upstream_id, rule.policy, frozenset(group.pk for group in rule.groups.all())
            )
            for rule in AccessRule.objects.prefetch_related("groups").order_by("position", "pk")
        )
        _rules.put("rules", found, 256 * (len(found) + 1), ttl=RULES_SECONDS)
    return found


def forget() -> None:
    """Read the rules again on the next request (after they were changed here)."""
    _rules.forget("rules")


def first_match(rules: Sequence[Rule], upstream_id: int, repository: str) -> Rule | None:
    return next((rule for rule in rules if rule.matches(upstream_id, repository)), None)


def decide(
    rules: Sequence[Rule], upstream_id: int, repository: str, who: Requester, is_private: Callable[[], bool]
) -> Verdict:
    """May `who` pull `repository` (as the upstream names it)? `is_private` is asked only
    when the answer depends on it: an anonymous client and no rule."""
    rule = first_match(rules, upstream_id, repository)
    policy = rule.policy if rule is not None else settings.MIRROR_ACCESS_DEFAULT_POLICY
    if policy == Policy.PUBLIC:
        if rule is None and who.user is None and is_private():
            return Verdict.NEEDS_LOGIN
        return Verdict.ALLOW
    if who.user is None:
        return Verdict.NEEDS_LOGIN
    if policy == Policy.GROUPS and not who.is_superuser and not (rule.group_ids & who.group_ids):
        return Verdict.DENY
    return Verdict.ALLOW
