"""Talking to an upstream registry: auth, HEAD/GET, redirects, rate-limit headers.

Auth works the way Docker Hub does it: a request answered 401 with a Bearer challenge gets a
token from the challenge's realm (HTTP Basic with the account's username and access token,
or anonymously), cached per scope until it expires; a Basic challenge gets the account's
credentials directly. A realm is asked only where destinations.py allows (the upstream's own
host, or its listed realm hosts, over HTTPS). Redirects are followed for blobs only (Docker
Hub sends them to a CDN), by hand, so the Authorization header never leaves for another host,
and only to where destinations.py allows; a redirect of a manifest, tag list, token or
`/v2/` request is refused (502). What the upstream's headers say is checked before it is used
(digests, sizes, rate limits, Retry-After). Every call has timeouts, and every failure is
turned into the registry error a client should see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
import urllib3
from urllib3.util.retry import Retry

from registry import oci, signals
from registry.destinations import DestinationRefused, Destinations, GuardedAdapter, default_realm_hosts

if TYPE_CHECKING:
    from registry.upstreams.tokencache import SharedTokens

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
TOKEN_MAX_BYTES = 1024 * 1024
# What an upstream's Retry-After may hold the mirror back for (a day); more is a broken upstream.
RETRY_AFTER_MAX = 86400
TOKEN_EXPIRY_MARGIN = 10.0  # seconds: refresh a token a little before the upstream would
DEFAULT_TOKEN_LIFETIME = 60.0  # the token spec's default when expires_in is absent
TOKEN_LIFETIME_MAX = 86400.0
CHUNK_SIZE = 1024 * 1024

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
# A challenge's service and scope go back to the realm as query parameters: plain text, bounded.
_CHALLENGE_VALUE = re.compile(r"^[\x20-\x7e]{0,1000}\Z")
_NUMBER = re.compile(r"^[0-9]{1,9}\Z")  # ASCII digits only (int() takes "١٢", "+1", "1_0")


class UpstreamUnavailable(oci.Unavailable):
    """The upstream could not be reached, timed out, or failed with a 5xx."""


class UpstreamRefused(UpstreamUnavailable):
    """The upstream asked the mirror to go where it does not go (a redirect of a manifest, tag
    list or token request; a redirect to an internal address or from HTTPS to HTTP; a token
    realm it may not ask): nothing was sent there, and the client gets a 502."""

    status = 502


class RealmRefused(UpstreamRefused):
    """The upstream's token realm is not one the mirror sends credentials (or anything) to."""


class CredentialsRejected(oci.Unauthorized):
    """The upstream refused the account itself (its token service, or Basic auth), not
    access to one repository: another account may do better."""


def make_session(max_connections: int = 64, destinations: Destinations | None = None) -> requests.Session:
    """A connection pool of at most `max_connections` per host; a caller beyond that waits
    for a connection rather than opening another. Given an upstream's `destinations`, every
    connection to a host other than its own is made to an address those rules allow."""
    session = requests.Session()
    # Retry only what never reached the upstream; a HEAD is never turned into a GET.
    retry = Retry(
        total=2,
        connect=2,
        read=0,
        status=0,
        other=0,
        backoff_factor=0.2,
        allowed_methods=None,
        respect_retry_after_header=False,  # a 429 or 503 is the caller's to handle (stale serve, backoff)
    )
    options = dict(pool_connections=4, pool_maxsize=max_connections, pool_block=True, max_retries=retry)
    adapter = GuardedAdapter(destinations, **options) if destinations is not None else HTTPAdapter(**options)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass(frozen=True)
class RateLimit:
    limit: int | None
    remaining: int | None
    window: int | None


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    content: bytes = b""

    @property
    def digest(self) -> str | None:
        """The upstream's Docker-Content-Digest, None when it sends none. A value that is not a
        digest is the upstream's fault, not the client's: 502 MANIFEST_INVALID."""
        value = self.headers.get("Docker-Content-Digest")
        if not value:
            return None
        try:
            return str(oci.parse_digest(value.strip()))
        except oci.DigestInvalid:
            logger.warning("upstream sent a malformed Docker-Content-Digest")
            raise oci.ManifestInvalid("upstream sent a malformed Docker-Content-Digest") from None

    @property
    def content_length(self) -> int | None:
        value = (self.headers.get("Content-Length") or "").strip()
        return int(value) if re.fullmatch(r"[0-9]{1,19}", value) else None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` → ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): quoted or bare for key, quoted, bare in _CHALLENGE_PARAM.findall(rest)}
    return scheme.lower(), params


def parse_ratelimit(headers: requests.structures.CaseInsensitiveDict) -> RateLimit | None:
    """Docker Hub's `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`."""

    def split(value: str | None) -> tuple[int | None, int | None]:
        # Plain ASCII numbers that fit the database's integers; anything else is not said.
        if not value:
            return None, None
        number, _, params = value.partition(";")
        window = re.search(r"(?:^|[\s;,])w=([0-9]{1,9})(?:\Z|[\s;,])", params)
        if not _NUMBER.match(number.strip()):
            return None, None
        return int(number.strip()), int(window.group(1)) if window else None

    limit, window = split(headers.get("ratelimit-limit"))
    remaining, remaining_window = split(headers.get("ratelimit-remaining"))
    if limit is None and remaining is None:
        return None
    return RateLimit(limit, remaining, window or remaining_window)


class UpstreamClient:
    """One upstream registry seen through one account (or anonymously). Thread-safe."""

    def __init__(
        self,
        url: str,
        username: str = "",
        password: str = "",
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        verify: bool | str = True,
        on_ratelimit: Callable[[RateLimit], None] | None = None,
        session: requests.Session | None = None,
        shared_tokens: SharedTokens | None = None,
        realm_hosts: tuple[str, ...] | list[str] | None = None,
    ):
        self.url = url.rstrip("/")
        # Where this upstream may send the mirror (token realms, redirects): destinations.py.
        # Not given: the default for the URL (Docker Hub's auth.docker.io), not an upstream's own list.
        if realm_hosts is None:
            realm_hosts = default_realm_hosts(self.url)
        self.destinations = Destinations.of(self.url, realm_hosts)
        self.username = username
        self._credentials = (username, password) if username else None
        self.timeout = (connect_timeout, read_timeout)
        self.verify = verify
        self.on_ratelimit = on_ratelimit
        self._tokens: dict[str, tuple[str, float]] = {}
        # Tokens other replicas got (tokencache.py), looked up once the upstream asked for one.
        self.shared_tokens = shared_tokens
        self._bearer = False
        self._use_basic = False
        self._lock = threading.Lock()
        # The accounts of one upstream share its session: its connection limit is theirs.
        self.session = session or make_session(destinations=self.destinations)

    # --- the calls the cache makes -------------------------------------------------------------
    def head_manifest(self, name: str, reference: str) -> UpstreamResponse:
        response = self._send("HEAD", name, f"manifests/{reference}", {"Accept": oci.MANIFEST_ACCEPT})
        with response:
            self._raise_for_status(response, oci.ManifestUnknown, "manifest unknown to upstream")
            return UpstreamResponse(response.status_code, response.headers)

    def get_manifest(self, name: str, reference: str) -> UpstreamResponse:
        response = self._send("GET", name, f"manifests/{reference}", {"Accept": oci.MANIFEST_ACCEPT}, stream=True)
        with response:
            self._raise_for_status(response, oci.ManifestUnknown, "manifest unknown to upstream")
            content = self._read_limited(response, oci.MANIFEST_MAX_BYTES)
            return UpstreamResponse(response.status_code, response.headers, content)

    # Blobs, GET and HEAD alike, may be redirected (Distribution redirects both to its storage).
    def head_blob(self, name: str, digest: str) -> UpstreamResponse:
        response = self._send("HEAD", name, f"blobs/{digest}", {}, follow_redirects=True)
        with response:
            self._raise_for_status(response, oci.BlobUnknown, "blob unknown to upstream")
            return UpstreamResponse(response.status_code, response.headers)

    def open_blob(self, name: str, digest: str) -> BlobDownload:
        response = self._send("GET", name, f"blobs/{digest}", {}, stream=True, follow_redirects=True)
        try:
            self._raise_for_status(response, oci.BlobUnknown, "blob unknown to upstream")
        except BaseException:
            response.close()
            raise
        return BlobDownload(response)

    def get_tags(
        self, name: str, n: int | None, last: str | None, max_bytes: int = 16 * 1024 * 1024
    ) -> UpstreamResponse:
        params = {key: value for key, value in (("n", n), ("last", last)) if value is not None}
        response = self._send("GET", name, "tags/list", {"Accept": "application/json"}, params=params, stream=True)
        with response:
            self._raise_for_status(response, oci.NameUnknown, "repository unknown to upstream")
            content = self._read_limited(response, max_bytes)
            return UpstreamResponse(response.status_code, response.headers, content)

    def check_credentials(self) -> str:
        """Prove the account works without pulling anything: fetch a token (or try Basic auth)
        the way the upstream's `/v2/` challenge asks. Raises CredentialsRejected when the
        upstream refuses the account, UpstreamUnavailable when it cannot be asked."""
        url = f"{self.url}/v2/"
        with self._request("GET", url, {}, stream=False) as response:
            status, challenge = response.status_code, response.headers.get("WWW-Authenticate", "")
        if status == 200:
            return "the upstream needs no authentication"
        if status != 401:
            raise UpstreamUnavailable(f"upstream answered {status}")
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer" and params.get("realm"):
            self._fetch_token(params, None)
            return "token issued" + ("" if self._credentials else " (anonymous)")
        # Basic auth goes to the upstream's own URL: no realm to check.
        if scheme == "basic" and self._credentials:
            headers = {"Authorization": requests.auth._basic_auth_str(*self._credentials)}
            with self._request("GET", url, headers, stream=False) as response:
                status = response.status_code
            if status in (401, 403):
                raise CredentialsRejected("upstream rejected the credentials")
            if status >= 300:
                raise UpstreamUnavailable(f"upstream answered {status}")
            self._use_basic = True
            return "basic authentication accepted"
        raise CredentialsRejected("upstream requires credentials")

    # --- transport -----------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        name: str,
        path: str,
        headers: dict[str, str],
        *,
        stream: bool = False,
        params=None,
        follow_redirects: bool = False,
    ) -> requests.Response:
        url = f"{self.url}/v2/{name}/{path}"
        scope = f"repository:{name}:pull"
        sent = self._auth_headers(scope, headers)
        follow = follow_redirects

        def request(auth_headers: dict[str, str]) -> requests.Response:
            return self._request(method, url, auth_headers, stream, params, follow_redirects=follow)

        response = request(sent)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            scheme, challenge_params = parse_challenge(challenge)
            if scheme == "bearer" and challenge_params.get("realm"):
                self._bearer = True
                if self._take_shared_token(scope, refused=sent.get("Authorization")):
                    response = request(self._auth_headers(scope, headers))
                    if response.status_code != 401:
                        return response
                    response.close()  # refused (revoked, or expired early): get one of our own
                self._fetch_token(challenge_params, scope)
            elif scheme == "basic" and self._credentials:
                self._use_basic = True
            else:
                raise CredentialsRejected("upstream requires authentication")
            response = request(self._auth_headers(scope, headers))
            if response.status_code == 401 and scheme == "basic":
                response.close()  # Basic credentials are all or nothing: the account is refused
                raise CredentialsRejected("upstream rejected the credentials")
        return response

    def _auth_headers(self, scope: str, headers: dict[str, str]) -> dict[str, str]:
        headers = dict(headers)
        with self._lock:
            token = self._tokens.get(scope)
        if not (token and token[1] > time.monotonic()) and self._bearer and self._take_shared_token(scope):
            with self._lock:
                token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            headers["Authorization"] = f"Bearer {token[0]}"
        elif self._use_basic and self._credentials:
            headers["Authorization"] = requests.auth._basic_auth_str(*self._credentials)
        return headers

    def _take_shared_token(self, scope: str, refused: str | None = None) -> bool:
        """Adopt the token another process left for this account and scope, unless it is the
        one the upstream just refused."""
        if self.shared_tokens is None:
            return False
        found = self.shared_tokens.get(self.url, self.username, scope)
        if found is None or f"Bearer {found[0]}" == refused:
            return False
        with self._lock:
            self._tokens[scope] = (found[0], time.monotonic() + found[1])
        return True

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        stream: bool,
        params=None,
        *,
        follow_redirects: bool = False,
    ) -> requests.Response:
        """One call. Redirects are followed (by hand, without Authorization after the first
        hop) only when `follow_redirects` (blobs), and only where destinations.py allows;
        otherwise a redirect is UpstreamRefused and its Location is never asked."""
        for _ in range(MAX_REDIRECTS + 1):
            started = time.monotonic()
            try:
                response = self.session.request(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    stream=stream,
                    allow_redirects=False,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except DestinationRefused as refusal:
                logger.warning("upstream %s %s refused: %s", method, _redact(url), refusal)
                raise UpstreamRefused(str(refusal)) from None
            except requests.RequestException as error:
                logger.warning("upstream %s %s failed: %s", method, _redact(url), type(error).__name__)
                signals.upstream_call(
                    self.url, self.username, method, url, None, time.monotonic() - started, type(error).__name__
                )
                raise UpstreamUnavailable("upstream unreachable", {"error": type(error).__name__}) from None
            elapsed = response.elapsed.total_seconds()
            signals.upstream_call(self.url, self.username, method, url, response.status_code, elapsed)
            self._note_ratelimit(response)
            if response.status_code not in REDIRECT_STATUSES:
                return response
            location = response.headers.get("Location")
            response.close()
            if not follow_redirects:
                what = _request_kind(url)
                logger.warning("upstream redirected %s %s (%s): refused", method, _redact(url), response.status_code)
                raise UpstreamRefused(
                    f"upstream redirected the {what} request ({response.status_code}); "
                    "the mirror follows redirects for blobs only",
                    {"status": response.status_code},
                )
            try:
                url = self.destinations.redirect_target(url, location)
            except DestinationRefused as refusal:
                logger.warning("upstream redirect of %s %s refused: %s", method, _redact(url), refusal)
                raise UpstreamRefused(str(refusal)) from None
            headers = {key: value for key, value in headers.items() if key.lower() != "authorization"}
            params = None  # the Location carries its own query
        raise UpstreamUnavailable("upstream redirected too many times")

    def _fetch_token(self, challenge: dict[str, str], scope: str | None) -> None:
        """A token from the challenge's realm, if destinations.py lets the mirror ask it at all
        (with credentials or without: RealmRefused otherwise, and the realm gets nothing)."""
        realm = challenge.get("realm", "")
        refusal = self.destinations.realm_refusal(realm)
        if refusal:
            logger.warning("upstream %s: %s", _redact(self.url), refusal)
            raise RealmRefused(refusal)
        service = challenge.get("service", "")
        if not _CHALLENGE_VALUE.match(service):
            raise UpstreamRefused("upstream's challenge names an unusable service; no token requested")
        params = {"scope": scope} if scope else {}
        if service:
            params["service"] = service
        try:
            response = self.session.get(
                realm,
                params=params,
                auth=self._credentials,
                stream=True,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except DestinationRefused as refused:
            raise RealmRefused(str(refused)) from None
        except requests.RequestException as error:
            raise UpstreamUnavailable("upstream token service unreachable", {"error": type(error).__name__}) from None
        with response:
            if response.status_code in REDIRECT_STATUSES:
                raise UpstreamRefused(
                    f"upstream token service redirected ({response.status_code}); the mirror follows redirects for blobs only",
                    {"status": response.status_code},
                )
            if response.status_code in (401, 403):
                raise CredentialsRejected("upstream rejected the mirror's credentials")
            if response.status_code >= 400:
                raise UpstreamUnavailable(f"upstream token service answered {response.status_code}")
            try:
                body = json.loads(self._read_limited(response, TOKEN_MAX_BYTES))
                token = body.get("token") or body.get("access_token")
                lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
                # NaN or negative is not a lifetime; past a day, ask again anyway.
                lifetime = min(lifetime, TOKEN_LIFETIME_MAX) if lifetime > 0 else DEFAULT_TOKEN_LIFETIME
            except (ValueError, AttributeError, TypeError, oci.ManifestInvalid):
                token = None
            if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]{1,16384}", token):
                token = None  # it goes into an Authorization header: printable, bounded
            if not token:
                raise UpstreamUnavailable("upstream token service answered without a token")
        good_for = max(lifetime - TOKEN_EXPIRY_MARGIN, 1.0)
        if scope:
            with self._lock:
                self._tokens[scope] = (token, time.monotonic() + good_for)
            if self.shared_tokens is not None:
                self.shared_tokens.put(self.url, self.username, scope, token, good_for)

    def _note_ratelimit(self, response: requests.Response) -> None:
        if self.on_ratelimit is None:
            return
        ratelimit = parse_ratelimit(response.headers)
        if ratelimit is not None:
            try:
                self.on_ratelimit(ratelimit)
            except Exception:  # bookkeeping must never break a pull
                logger.exception("could not record upstream rate limit")

    @staticmethod
    def _raise_for_status(response: requests.Response, not_found: type[oci.RegistryError], message: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status == 404:
            if _error_code(response) == oci.NameUnknown.code:
                raise oci.NameUnknown("repository unknown to upstream")
            raise not_found(message)
        if status == 401:
            raise oci.Unauthorized("upstream denied access")
        if status == 403:
            raise oci.Denied("upstream denied access")
        if status == 429:
            raise oci.TooManyRequests("upstream rate limit reached", {"retry_after": retry_after(response.headers)})
        if status == 400:
            raise oci.NameInvalid("upstream rejected the request")
        raise UpstreamUnavailable(f"upstream answered {status}")

    @staticmethod
    def _read_limited(response: requests.Response, limit: int) -> bytes:
        chunks, total = [], 0
        try:
            for chunk in response.raw.stream(64 * 1024, decode_content=True):
                total += len(chunk)
                if total > limit:
                    raise oci.ManifestInvalid("upstream response too large")
                chunks.append(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise UpstreamUnavailable("upstream connection broke", {"error": type(error).__name__}) from None
        return b"".join(chunks)


class BlobSizeInvalid(oci.RegistryError):
    """The upstream's blob is not the size it may be (its descriptor's, or the mirror's maximum)."""

    code, status = "SIZE_INVALID", 502


class BlobDownload:
    """An open upstream blob response, read as raw bytes (never content-decoded).

    `size` is the upstream's Content-Length, or the size the download is held to (`limit_to`)
    when the upstream does not say it; bytes past the limit fail the download."""

    def __init__(self, response: requests.Response):
        self.response = response
        self.size: int | None = UpstreamResponse(response.status_code, response.headers).content_length
        self.limit: int | None = None

    def limit_to(self, size: int, *, exact: bool) -> None:
        """Hold the download to `size` bytes: exactly (a descriptor's size) or at most (a
        maximum). A Content-Length that breaks it is refused now, before anything is read."""
        declared = self.size
        if declared is not None and (declared != size if exact else declared > size):
            self.close()
            raise BlobSizeInvalid(
                "upstream blob size differs from what it may be", {"content_length": declared, "expected": size}
            )
        self.limit = size
        if exact:
            self.size = size

    def chunks(self) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in self.response.raw.stream(CHUNK_SIZE, decode_content=False):
                received += len(chunk)
                if self.limit is not None and received > self.limit:
                    raise BlobSizeInvalid("upstream sent more bytes than the blob may have", {"expected": self.limit})
                yield chunk
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise UpstreamUnavailable("upstream connection broke", {"error": type(error).__name__}) from None

    def close(self) -> None:
        self.response.close()


def retry_after(headers) -> str | None:
    """The upstream's Retry-After in seconds (at most RETRY_AFTER_MAX), when it says one."""
    value = (headers.get("Retry-After") or "").strip()
    return str(min(int(value), RETRY_AFTER_MAX)) if _NUMBER.match(value) else None


def _request_kind(url: str) -> str:
    """What a request to the upstream asks for, for messages."""
    path = urlsplit(url).path
    if "/manifests/" in path:
        return "manifest"
    if path.endswith("/tags/list"):
        return "tag list"
    if "/blobs/" in path:
        return "blob"
    return "/v2/"


def _error_code(response: requests.Response) -> str | None:
    """The first OCI error code of a small JSON error body (a HEAD has none)."""
    if response.request.method == "HEAD" or "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        body = response.raw.read(64 * 1024, decode_content=True)
        errors = json.loads(body).get("errors") or []
        return str(errors[0].get("code"))
    except (ValueError, AttributeError, IndexError, TypeError, OSError, urllib3.exceptions.HTTPError):
        return None


def _redact(url: str) -> str:
    """URLs may carry presigned credentials in their query; logs get only the path."""
    return url.split("?", 1)[0]
