"""Each account is verified at start-up and periodically: can it get a token?

The result and its time are kept on the account (and whether the upstream answered, on the
upstream), so admins see a wrong password, an unreachable upstream, or a token realm the
mirror refuses to send credentials to, before a client does.
An account found rejected is left aside until it verifies again; if it was the one in use,
the next account takes over at once. Verifying downloads nothing and is never a pull.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from registry.models import Upstream, UpstreamAccount
from registry.secrets import SecretUnreadable
from registry.upstreams import accounts, reachability
from registry.upstreams.client import CredentialsRejected, UpstreamRefused, UpstreamUnavailable
from registry.upstreams.failover import account_client

logger = logging.getLogger(__name__)

Verification = UpstreamAccount.Verification


def verify(account: UpstreamAccount) -> str:
    """Verify one account; returns the verification status (ok, rejected, unreachable, error)."""
    upstream = account.upstream
    state = accounts.state_of(account)
    rejected_at = account.rejected_at
    try:
        message = account_client(upstream, state).check_credentials()
        status, rejected_at = Verification.OK, None
        reachability.note(upstream, True)
    except SecretUnreadable as error:
        status, message, rejected_at = Verification.ERROR, str(error), rejected_at or timezone.now()
    except CredentialsRejected as error:
        status, message, rejected_at = Verification.REJECTED, error.message, rejected_at or timezone.now()
        reachability.note(upstream, True)
    except UpstreamRefused as error:
        # The upstream answered, but asked for what the mirror refuses (a token realm on a host
        # it does not trust, a redirect): nothing was sent; the upstream's status says why too.
        status, message = Verification.REFUSED, error.message
        reachability.note(upstream, False, error.message)
    except UpstreamUnavailable as error:
        status, message = Verification.UNREACHABLE, error.message
        reachability.note(upstream, False, error.message)
    except Exception as error:  # an odd answer must not stop the other verifications
        logger.exception("verifying account %s of %s failed", account.label, upstream.name)
        status, message = Verification.ERROR, f"{type(error).__name__}"
    UpstreamAccount.objects.filter(pk=account.pk).update(
        verification=status, verification_message=message[:300], verified_at=timezone.now(), rejected_at=rejected_at
    )
    log = logger.warning if status != Verification.OK else logger.info
    log("upstream %s, account %s: %s (%s)", upstream.name, account.label, status, message)
    return status


def verify_all() -> str:
    """Verify every enabled account of every upstream, then put the best account in use."""
    results: dict[str, int] = {}
    for upstream in Upstream.objects.all():
        for account in UpstreamAccount.objects.filter(upstream=upstream, enabled=True).select_related("upstream"):
            status = verify(account)
            results[status] = results.get(status, 0) + 1
        accounts.forget(upstream)
        accounts.reconsider(upstream)
    return ", ".join(f"{count} {status}" for status, count in sorted(results.items())) or "no accounts"
