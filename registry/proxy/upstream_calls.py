"""How the proxy asks an upstream, for manifests, blobs and listings alike: through the
upstream's failover client, one process at a time per question (single flight), and which
failures let a cached answer be served stale instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from registry import oci
from registry.models import Upstream
from registry.storage import locks
from registry.upstreams import failover
from registry.upstreams.client import CredentialsRejected, UpstreamUnavailable
from registry.upstreams.failover import FailoverClient

# Upstream failures after which a cached tag is served stale rather than failing the pull
# (the upstream's stale policy permitting): the upstream down, rate-limiting, or refusing every
# account of the mirror.
STALE_SERVABLE = (UpstreamUnavailable, oci.TooManyRequests, CredentialsRejected)


def upstream_client(upstream: Upstream) -> FailoverClient:
    """The process-wide client of an upstream, over its accounts (failover.py); it caches
    tokens and connections."""
    return failover.client_for(upstream)


@contextmanager
def single_flight(name: str) -> Iterator[None]:
    """Let one process at a time ask the upstream about `name`; the others wait, then find
    the answer in the cache. A pull never waits longer than one upstream round trip for it."""
    wait = settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT + settings.MIRROR_UPSTREAM_READ_TIMEOUT
    try:
        lock = locks.acquire(name, timeout=wait)
    except locks.LockTimeout:
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
