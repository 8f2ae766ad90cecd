"""What the mirror announces as it works, for the apps built on it to record.

`registry` imports none of `dashboard`, `access` or `audit`: statistics and the audit log
connect receivers to these signals in their `AppConfig.ready()`. The pull path sends through
the small functions below, so a call site reads as what happened. Receivers run in the
sending thread and must not raise: what they record never fails a pull.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.dispatch import Signal

if TYPE_CHECKING:
    from registry.models import Upstream

# What a request or an upstream call was about.
MANIFEST = "manifest"
BLOB = "blob"

# Sent after every request the mirror made to an upstream, with the account that made it:
# upstream_id, account_id, username ("" = anonymous), method ("GET"/"HEAD"),
# kind ("manifest", "blob", "tags"), outcome ("ok" or the registry error code).
upstream_request = Signal()
# The request being answered is about this repository of this upstream: upstream, repository.
repository_targeted = Signal()
# The upstream answered for the client (a miss): upstream, repository, kind, downloaded (bytes).
upstream_fetched = Signal()
# One HTTP request an upstream client made (to the upstream, or where it redirected):
# upstream_url, account, method, url, status (None: no answer), seconds, error.
upstream_called = Signal()


def target(upstream: Upstream, repository: str) -> None:
    repository_targeted.send(None, upstream=upstream, repository=repository)


def upstream_used(upstream: Upstream, repository: str, kind: str, downloaded: int = 0) -> None:
    upstream_fetched.send(None, upstream=upstream, repository=repository, kind=kind, downloaded=downloaded)


def upstream_call(
    upstream_url: str, account: str, method: str, url: str, status: int | None, seconds: float, error: str = ""
) -> None:
    upstream_called.send(
        None,
        upstream_url=upstream_url,
        account=account,
        method=method,
        url=url,
        status=status,
        seconds=seconds,
        error=error,
    )
