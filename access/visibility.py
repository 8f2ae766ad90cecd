"""Whether the upstream serves a repository to anyone, or only to the mirror's account.

The mirror pulls with its upstream account, which may read private repositories. To avoid
handing those to anonymous clients, the upstream is asked the way an anonymous client would
ask it (a tag list of one entry, with an anonymous token: no manifest, so nothing Docker Hub
counts as a pull), and the answer is recorded per repository and asked again after
MIRROR_VISIBILITY_TTL. An upstream whose accounts are all anonymous needs no asking: what the
mirror can read, anyone can. While the upstream cannot be asked, the last recorded answer
holds, however old; with none, nothing is served to anonymous clients, and the client gets
the upstream's failure (503, or its 429 with Retry-After). A failure is never remembered as
an answer: the next request asks again, so the first one after the upstream recovers goes through.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from registry import oci
from registry.memory import AnswerMemory
from registry.models import Upstream
from registry.upstreams import accounts, failover
from registry.upstreams.client import CredentialsRejected

from .models import RepositoryVisibility

logger = logging.getLogger(__name__)

ABSENT_SECONDS = 30.0  # an upstream that said "no such repository" is not asked again sooner
STALE_SECONDS = 5.0  # an old record served while the upstream gives no answer is trusted this long
RETRY_AFTER_SECONDS = 30  # told to a client when the upstream's 429 named no Retry-After
ABSENT = "absent"
# (upstream pk, repository) → public (bool) or ABSENT: answers only, never a failure to ask.
_known: AnswerMemory[bool | str] = AnswerMemory(4 * 1024 * 1024)
# What an anonymous client that may not pull is told (Docker Hub says 401 even for a
# repository that does not exist, so the two cannot be told apart, and need not be).
REFUSED = (oci.Unauthorized, oci.Denied, CredentialsRejected)


def has_credentials(upstream: Upstream) -> bool:
    """Whether the mirror pulls from this upstream with an account (not only anonymously)."""
    return any(state.username for state in accounts.snapshot(upstream).accounts)


def is_private(upstream: Upstream, repository: str, *, ask: bool = True) -> bool:
    """True unless the upstream grants anonymous pulls of `repository` (as it names it).
    With `ask` false, only what is recorded counts (listings never contact the upstream).

    When the upstream tells an anonymous client the repository does not exist, so is the
    anonymous client told (NameUnknown), rather than what the account might see there; when
    it cannot be asked and nothing is recorded, the client gets the upstream's failure (503,
    429): nothing is served without an answer."""
    if not has_credentials(upstream):
        return False
    key = (upstream.pk, repository)
    public = _known.get(key)
    if public == ABSENT:
        raise _absent()
    if public is not None:
        return not public
    record = RepositoryVisibility.objects.filter(upstream=upstream, repository=repository).first()
    ttl = settings.MIRROR_VISIBILITY_TTL
    if record is not None:
        left = ttl - (timezone.now() - record.checked_at).total_seconds()
        if left > 0 or not ask:
            _known.put(key, record.public, 256, ttl=min(left, 60.0) if left > 0 else 5.0)
            return not record.public
    if not ask:
        return True
    try:
        public = anonymous_pull_granted(upstream, repository)
    except oci.NameUnknown:
        _known.put(key, ABSENT, 256, ttl=ABSENT_SECONDS)
        raise _absent() from None
    except oci.RegistryError as error:  # no answer: keep the last one, or pass the upstream's failure on
        logger.warning("could not ask %s whether %s is public: %s", upstream.name, repository, error.message)
        if record is None:
            raise _with_retry_after(error) from None
        _known.put(key, record.public, 256, ttl=STALE_SECONDS)
        return not record.public
    record_visibility(upstream, repository, public)
    _known.put(key, public, 256, ttl=min(ttl, 60.0))
    return not public


def anonymous_pull_granted(upstream: Upstream, repository: str) -> bool:
    """Ask the upstream as an anonymous client. NameUnknown when it says there is no such
    repository; the upstream's failure (unreachable, rate-limiting) when it gives no answer."""
    try:
        failover.anonymous_client(upstream).get_tags(repository, 1, None)
    except REFUSED:
        return False
    return True


def _with_retry_after(error: oci.RegistryError) -> oci.RegistryError:
    """The upstream's 429 as the client's 429, always with a Retry-After."""
    if isinstance(error, oci.TooManyRequests):
        detail = error.detail if isinstance(error.detail, dict) else {}
        if not str(detail.get("retry_after") or "").isdigit():
            return oci.TooManyRequests(error.message, {**detail, "retry_after": RETRY_AFTER_SECONDS})
    return error


def _absent() -> oci.NameUnknown:
    return oci.NameUnknown("repository unknown to upstream")


def record_visibility(upstream: Upstream, repository: str, public: bool) -> None:
    now = timezone.now()
    try:
        with transaction.atomic():
            RepositoryVisibility.objects.update_or_create(
                upstream=upstream, repository=repository, defaults={"public": public, "checked_at": now}
            )
    except IntegrityError:  # recorded concurrently: that answer is as good
        pass


def forget() -> None:
    _known.clear()
