"""The upstream as the cache talks to it: through its accounts, one after the other.

`client_for(upstream)` has the methods of UpstreamClient. Each call goes through the account
in use (accounts.py); when the upstream rejects that account's credentials or answers 429,
the same request is made with the next account, and the switch is recorded. Each request is
counted for the account that made it (accountusage.py), 404s for tags and repositories are
remembered for a short while (negative.py), and whether the upstream answers is noted
(reachability.py). The upstream's own settings apply: TLS (CA bundle or insecure), timeouts,
a limit on open connections shared by all its accounts, and the token realm hosts its
credentials may go to (destinations.py).
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import logging
import os
from pathlib import Path
import threading
from typing import TypeVar

from django.conf import settings
from django.utils import timezone
import urllib3

from registry import oci
from registry.destinations import Destinations
from registry.models import Upstream
from registry.secrets import SecretUnreadable, decrypt
from registry.upstreams import accounts, negative, reachability, tokencache
from registry.upstreams import usage as accountusage
from registry.upstreams.accounts import AccountState
from registry.upstreams.client import (
    BlobDownload,
    CredentialsRejected,
    UpstreamClient,
    UpstreamResponse,
    UpstreamUnavailable,
    make_session,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class NoUsableAccount(UpstreamUnavailable):
    """Every account of the upstream is disabled."""


def verify_option(upstream: Upstream) -> bool | str:
    """What `requests` needs for the upstream's TLS: False (insecure), a CA bundle file, or True."""
    if not upstream.tls_verify:
        # The admin chose this for the upstream: no warning on each of its requests.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return False
    pem = upstream.ca_certificates.strip()
    if not pem:
        return True
    directory = Path(settings.MIRROR_DATA_DIR) / "tls"
    path = directory / f"upstream-ca-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
    if not path.exists():  # named by content: a changed bundle is a new file
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(pem + "\n")
        temporary.replace(path)
    return str(path)


def account_client(upstream: Upstream, state: AccountState, session=None, on_ratelimit=None) -> UpstreamClient:
    """A client of the upstream that authenticates as this account (SecretUnreadable if its
    secret cannot be decrypted)."""
    password = decrypt(state.secret) if state.secret else ""
    return _upstream_client(
        upstream,
        state.username,
        password,
        on_ratelimit=on_ratelimit,
        session=session,
        shared_tokens=tokencache.shared_tokens(),
    )


def _upstream_client(upstream: Upstream, username: str = "", password: str = "", **extra) -> UpstreamClient:
    """A client of the upstream as its settings say: timeouts, TLS, the realms it may trust."""
    connect, read = upstream.timeouts()
    return UpstreamClient(
        upstream.url,
        username,
        password,
        connect_timeout=connect,
        read_timeout=read,
        verify=verify_option(upstream),
        realm_hosts=upstream.token_realm_hosts(),
        **extra,
    )


def destinations_of(upstream: Upstream) -> Destinations:
    """Where the upstream may send the mirror: its own host, its realm hosts, public addresses."""
    return Destinations.of(upstream.url, upstream.token_realm_hosts())


class FailoverClient:
    """One upstream's client for the cache, over all of its accounts. Thread-safe."""

    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.session = make_session(upstream.connection_limit(), destinations_of(upstream))
        self._clients: dict[tuple, UpstreamClient] = {}
        self._lock = threading.Lock()

    @property
    def username(self) -> str:
        """The account pulls go through now ("" is anonymous), as statistics name it."""
        snap = accounts.snapshot(self.upstream)
        active = next((s for s in snap.accounts if s.pk == snap.active), None)
        if active is None:
            ordered = accounts.in_order(self.upstream)
            active = ordered[0] if ordered else None
        return active.username if active is not None else ""

    # --- what the cache calls --------------------------------------------------------------------
    def head_manifest(self, name: str, reference: str) -> UpstreamResponse:
        return self._call("HEAD", "manifest", name, reference, lambda client: client.head_manifest(name, reference))

    def get_manifest(self, name: str, reference: str) -> UpstreamResponse:
        return self._call("GET", "manifest", name, reference, lambda client: client.get_manifest(name, reference))

    def head_blob(self, name: str, digest: str) -> UpstreamResponse:
        return self._call("HEAD", "blob", name, None, lambda client: client.head_blob(name, digest))

    def open_blob(self, name: str, digest: str) -> BlobDownload:
        return self._call("GET", "blob", name, None, lambda client: client.open_blob(name, digest))

    def get_tags(
        self, name: str, n: int | None, last: str | None, max_bytes: int = 16 * 1024 * 1024
    ) -> UpstreamResponse:
        return self._call("GET", "tags", name, None, lambda client: client.get_tags(name, n, last, max_bytes))

    # --- accounts, one after the other -------------------------------------------------------------
    def _call(self, method: str, kind: str, name: str, reference: str | None, call: Callable[[UpstreamClient], T]) -> T:
        remembers = kind != "blob"
        if remembers:
            negative.recall(self.upstream.pk, name, reference)
        ordered = accounts.in_order(self.upstream)
        if not ordered:
            if accounts.cooling_ends(self.upstream) is not None:
                raise self._all_rate_limited()
            raise NoUsableAccount(f"no enabled account for upstream {self.upstream.name}")
        failures: list[oci.RegistryError] = []
        for state in ordered:
            try:
                client = self._client(state)
            except SecretUnreadable as error:
                logger.error("upstream %s, account %s: %s", self.upstream.name, state.label, error)
                accounts.mark_rejected(state)
                failures.append(CredentialsRejected(str(error)))
                continue
            try:
                result = call(client)
            except CredentialsRejected as error:
                self._count(state, method, kind, error.code)
                logger.warning("upstream %s rejected account %s", self.upstream.name, state.label)
                accounts.mark_rejected(state)
                failures.append(error)
                continue
            except oci.TooManyRequests as error:
                self._count(state, method, kind, error.code)
                retry_after = error.detail.get("retry_after") if isinstance(error.detail, dict) else None
                logger.warning("upstream %s rate-limits account %s", self.upstream.name, state.label)
                accounts.mark_rate_limited(state, retry_after)
                failures.append(error)
                continue
            except UpstreamUnavailable as error:
                reachability.note(self.upstream, False, error.message)
                raise  # not the account's fault: another account would fare no better
            except oci.RegistryError as error:
                self._count(state, method, kind, error.code)
                reachability.note(self.upstream, True)
                if remembers:
                    negative.remember(self.upstream.pk, name, reference, error)
                raise
            self._count(state, method, kind, "ok")
            reachability.note(self.upstream, True)
            accounts.clear_rejection(state)
            accounts.activate(self.upstream, state)
            return result
        if any(isinstance(error, oci.TooManyRequests) for error in failures) or accounts.cooling_ends(self.upstream):
            raise self._all_rate_limited()  # the better answer: the account that was good is rate-limited
        raise failures[-1]

    def _all_rate_limited(self) -> oci.TooManyRequests:
        ends = accounts.cooling_ends(self.upstream)
        seconds = max(int((ends - timezone.now()).total_seconds()), 1) if ends else settings.MIRROR_ACCOUNT_COOLDOWN
        return oci.TooManyRequests(
            f"upstream {self.upstream.name} rate-limits every account of the mirror", {"retry_after": str(seconds)}
        )

    def _client(self, state: AccountState) -> UpstreamClient:
        key = (state.pk, state.username, state.secret)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = account_client(
                    self.upstream,
                    state,
                    session=self.session,
                    on_ratelimit=lambda ratelimit, pk=state.pk: accounts.note_ratelimit(self.upstream, pk, ratelimit),
                )
                self._clients = {k: v for k, v in self._clients.items() if k[0] != state.pk}  # a changed secret
                self._clients[key] = client
        return client

    def _count(self, state: AccountState, method: str, kind: str, outcome: str) -> None:
        accountusage.record(self.upstream.pk, state.pk, state.username, method, kind, outcome)


_failover_clients: dict[int, tuple[tuple, FailoverClient]] = {}
_failover_lock = threading.Lock()


def _fingerprint(upstream: Upstream) -> tuple:
    """What the client is built from: a change makes a new client (new connections, tokens)."""
    return (
        upstream.url,
        upstream.tls_verify,
        upstream.ca_certificates,
        upstream.timeouts(),
        upstream.connection_limit(),
        tuple(upstream.token_realm_hosts()),
        settings.MIRROR_DATA_DIR,
    )


_anonymous_clients: dict[int, tuple[tuple, UpstreamClient]] = {}


def anonymous_client(upstream: Upstream) -> UpstreamClient:
    """The process-wide anonymous client of an upstream: it asks what anyone may pull (access's
    visibility checks), with the upstream's settings and its own tokens and connections."""
    fingerprint = _fingerprint(upstream)
    with _failover_lock:
        found = _anonymous_clients.get(upstream.pk)
        if found is None or found[0] != fingerprint:
            found = _anonymous_clients[upstream.pk] = (fingerprint, _upstream_client(upstream))
    return found[1]


def client_for(upstream: Upstream) -> FailoverClient:
    """The process-wide client of an upstream; it keeps tokens and connections."""
    fingerprint = _fingerprint(upstream)
    with _failover_lock:
        found = _failover_clients.get(upstream.pk)
        if found is None or found[0] != fingerprint:
            found = (fingerprint, FailoverClient(upstream))
            _failover_clients[upstream.pk] = found
        else:
            found[1].upstream = upstream  # the latest record (name, policies) for its messages
    return found[1]
