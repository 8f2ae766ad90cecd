"""The tests' one fake registry on loopback: honest, broken or hostile as each test needs.

A `FakeRegistry` answers from routes scripted per method and path (`script`), or serves whole
images honestly (`serve`), under one repository or under any (`ANY_REPOSITORY`), optionally
with layers whose bytes do not match their digest (`corrupt`). Anything unscripted is a 404 in
the registry's error format. Every request is logged (`seen`) with its headers, the account it
came as and the status it got; `sent` tells how many body bytes the client took.

What a real registry does around the answers is a behaviour, composed in order (the first is
the outermost): `FailFirst` answers the first requests with an error, `BearerRealm` asks for
tokens from its own realm (Basic per user, anonymous allowed), `UnknownRepositories` says some
names do not exist, `RateLimit` counts manifest pulls per account the way Docker Hub does.
`hub_like` puts the last three together. Either server speaks HTTPS when given a certificate
(tests/support/tls.py).

`Listener` is a loopback port that must receive nothing: a stand-in for an internal service
or a foreign token realm; it logs every request it gets.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import re
import ssl
import threading
from urllib.parse import parse_qs, urlsplit

from tests.support.images import PushedImage, PushedIndex, build_image
from tests.support.tls import ServerCertificate

ANY_REPOSITORY = "*"  # `serve(ANY_REPOSITORY, image)`: the image under every repository name
RATELIMIT_WINDOW = 21600  # Docker Hub's: six hours
WRITE_SIZE = 64 * 1024
_REPOSITORY_PATH = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<rest>[^/]*)")


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # Send no Content-Length and close the connection after the body (an upstream that does not say the size).
    unsized: bool = False

    def with_headers(self, **headers: str) -> Answer:
        return replace(self, headers=self.headers + _header_items(headers))


@dataclass
class Seen:
    """One request, as the registry saw it, then what it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    origin: str = ""  # the registry's own URL (scheme://127.0.0.1:port), for challenges naming it
    # The account it came as, set by `BearerRealm`: the token's, or on the token service the
    # Basic login asked for; "" is anonymous, None is not known (no realm, or not authenticated).
    user: str | None = None
    status: int | None = None  # None while it is being answered

    @property
    def repository(self) -> str | None:
        match = _REPOSITORY_PATH.fullmatch(self.path)
        return match["name"] if match else None

    @property
    def kind(self) -> str | None:
        """What under the repository it asks for: manifests, blobs or tags."""
        match = _REPOSITORY_PATH.fullmatch(self.path)
        return match["kind"] if match else None


Respond = Callable[[Seen], Answer]
Script = Answer | Respond
# A behaviour answers a request itself or hands it on to `inner` (and may change the answer).
Behaviour = Callable[[Seen, Respond], Answer]


def answer(status: int = 200, body: bytes | str | dict = b"", unsized: bool = False, **headers: str) -> Answer:
    """`answer(200, b"...", Content_Type="text/html")`: header names with `_` for `-`."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content_Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    return Answer(status, _header_items(headers), body, unsized)


def error(status: int, code: str, message: str = "scripted error", **headers: str) -> Answer:
    return answer(status, {"errors": [{"code": code, "message": message, "detail": None}]}, **headers)


def _header_items(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name.replace("_", "-"), value) for name, value in headers.items())


def flipped(data: bytes) -> bytes:
    """The same bytes with the middle one inverted: same length, another digest."""
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    return bytes(corrupt)


def corrupt_image(layer_size: int = 64 * 1024, seed: int = 4242) -> PushedImage:
    """`library/bad:latest`, one layer: what `serve(..., corrupt=[its layer])` makes a liar of."""
    return build_image("library/bad", "latest", layer_sizes=[layer_size], seed=seed)


class _Server:
    """A threaded HTTP server on 127.0.0.1 and an ephemeral port, stopped by `stop`."""

    def __init__(self, tls: ServerCertificate | None = None):
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def respond(self, seen: Seen) -> Answer:
        raise NotImplementedError

    def note_sent(self, seen: Seen, count: int) -> None:
        pass


class FakeRegistry(_Server):
    """Answers scripted routes, through its behaviours; anything unscripted is a 404 in the
    registry's error format."""

    def __init__(self, *behaviours: Behaviour, tls: ServerCertificate | None = None) -> None:
        self._routes: dict[tuple[str, str], Script] = {}
        self._sent: list[tuple[Seen, int]] = []
        self._answer: Respond = self._route
        for behaviour in reversed(behaviours):
            self._answer = _wrapped(behaviour, self._answer)
        super().__init__(tls)
        self._written = threading.Condition(self._lock)

    def script(self, method: str, path: str, script: Script) -> None:
        """Answer `method path` (query ignored) with `script`; HEAD defaults to GET's answer, bodiless.
        A path under `/v2/*/` stands for every repository not scripted by its own name."""
        with self._lock:
            self._routes[(method, path)] = script

    def serve(
        self,
        repository: str,
        image: PushedImage | PushedIndex,
        tag: str | None = None,
        corrupt: Collection[str] = (),
    ) -> None:
        """Serve an image (an index with its children) honestly: manifests by tag and digest, blobs;
        except the blobs whose digests are in `corrupt`, served `flipped` under the digest they
        should have (so only a digest check tells)."""
        tag = tag or image.tag
        children = image.children if isinstance(image, PushedIndex) else []
        for manifest in [image, *children]:
            headers = {"Content_Type": manifest.media_type, "Docker_Content_Digest": manifest.digest}
            self.script(
                "GET", f"/v2/{repository}/manifests/{manifest.digest}", answer(200, manifest.manifest, **headers)
            )
        self.script(
            "GET",
            f"/v2/{repository}/manifests/{tag}",
            answer(200, image.manifest, Content_Type=image.media_type, Docker_Content_Digest=image.digest),
        )
        for blob in image.blobs:
            data = flipped(blob.data) if blob.digest in corrupt else blob.data
            self.script(
                "GET",
                f"/v2/{repository}/blobs/{blob.digest}",
                answer(200, data, Content_Type="application/octet-stream", Docker_Content_Digest=blob.digest),
            )

    def seen(
        self,
        path: str | None = None,
        method: str | None = None,
        *,
        kind: str | None = None,
        status: int | None = None,
    ) -> list[Seen]:
        """The requests for `path`, or of a `kind` (manifests, blobs, tags), by `method`, answered `status`."""
        with self._lock:
            return [
                s
                for s in self.requests
                if (path is None or s.path == path)
                and (method is None or s.method == method)
                and (kind is None or s.kind == kind)
                and (status is None or s.status == status)
            ]

    def sent(self, path: str, method: str = "GET", wait: float = 10) -> list[int]:
        """Body bytes the client took (the socket accepted) for each answered `method path`.

        Answers still being written are waited for (up to `wait` seconds): a client that hangs
        up answers its own caller before this server's write fails and the count is known."""
        asked = self.seen(path, method)
        with self._written:
            self._written.wait_for(lambda: len(self._sent_to(path, method)) >= len(asked), timeout=wait)
            return [count for _, count in self._sent_to(path, method)]

    def _sent_to(self, path: str, method: str) -> list[tuple[Seen, int]]:
        return [(s, count) for s, count in self._sent if (s.path, s.method) == (path, method)]

    def note_sent(self, seen: Seen, count: int) -> None:
        with self._written:
            self._sent.append((seen, count))
            self._written.notify_all()

    def respond(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
        reply = self._answer(seen)
        seen.status = reply.status
        return reply

    def _route(self, seen: Seen) -> Answer:
        script = self._script_for(seen.method, seen.path)
        if script is None and seen.method == "HEAD":
            script = self._script_for("GET", seen.path)
        if script is None:
            if seen.path in ("/v2", "/v2/"):
                return answer(200, {})
            code = {"tags": "NAME_UNKNOWN", "blobs": "BLOB_UNKNOWN"}.get(seen.kind, "MANIFEST_UNKNOWN")
            return error(404, code, "not scripted")
        return script(seen) if callable(script) else script

    def _script_for(self, method: str, path: str) -> Script | None:
        with self._lock:
            script = self._routes.get((method, path))
            match = _REPOSITORY_PATH.fullmatch(path)
            if script is None and match:
                script = self._routes.get((method, f"/v2/{ANY_REPOSITORY}/{match['kind']}/{match['rest']}"))
            return script


def _wrapped(behaviour: Behaviour, inner: Respond) -> Respond:
    return lambda seen: behaviour(seen, inner)


# --- behaviours -------------------------------------------------------------------------------
@dataclass
class FailFirst:
    """The first `count` requests, whatever they ask, are answered `status` with no body."""

    count: int
    status: int = 503

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, seen: Seen, inner: Respond) -> Answer:
        with self._lock:
            failing = self.count > 0
            if failing:
                self.count -= 1
        return Answer(self.status) if failing else inner(seen)


@dataclass
class BearerRealm:
    """Docker Hub's authentication: everything but the token service (`/token` on the registry
    itself) is challenged for a Bearer token; the service gives one for a right Basic login
    (`users`: name -> password) or to anyone who sends none (anonymous), and a 401 for a wrong one."""

    users: Mapping[str, str]
    service: str = "fake-registry"

    def __call__(self, seen: Seen, inner: Respond) -> Answer:
        if seen.path == "/token":
            return self._token(seen)
        authorization = seen.headers.get("Authorization") or ""
        if not authorization.startswith("Bearer tok-"):
            return answer(401, WWW_Authenticate=f'Bearer realm="{seen.origin}/token",service="{self.service}"')
        seen.user = authorization[len("Bearer tok-") :]
        return inner(seen)

    def _token(self, seen: Seen) -> Answer:
        authorization = seen.headers.get("Authorization") or ""
        seen.user = ""
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            seen.user = name
            if self.users.get(name) != password:
                body = {"details": "incorrect username or password"}
                return answer(401, body, WWW_Authenticate=f'Basic realm="{seen.origin}/token"')
        return answer(200, {"token": f"tok-{seen.user}", "expires_in": 300})


@dataclass
class UnknownRepositories:
    """Repositories `unknown` says do not exist: anything under them is 404 NAME_UNKNOWN."""

    unknown: Callable[[str], bool]

    def __call__(self, seen: Seen, inner: Respond) -> Answer:
        if seen.repository is not None and self.unknown(seen.repository):
            return error(404, "NAME_UNKNOWN", "repository name not known to registry")
        return inner(seen)


@dataclass
class Quota:
    """One account's pulls: what its rate-limit headers report, and when it is refused."""

    reported: int  # the limit the headers advertise
    pulls: int | None = None  # manifest GETs answered before the 429s start; None: never refused
    used: int = 0  # manifest GETs counted (above 0: an account already part spent)


@dataclass
class RateLimit:
    """Docker Hub's rate limit, per account (`Seen.user`; None without a realm): each manifest
    answer to an account with a quota carries `ratelimit-limit`/`ratelimit-remaining` with their
    window, each GET spends one, and once its `pulls` are spent a GET is 429 with `Retry-After`."""

    quotas: Mapping[str | None, Quota] = field(default_factory=dict)
    retry_after: str = "30"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, seen: Seen, inner: Respond) -> Answer:
        quota = self.quotas.get(seen.user)
        if quota is None or seen.kind != "manifests":
            return inner(seen)
        with self._lock:
            refused = seen.method == "GET" and quota.pulls is not None and quota.used >= quota.pulls
            if seen.method == "GET" and not refused:
                quota.used += 1
            remaining = 0 if refused else max(quota.reported - quota.used, 0)
        limits = {
            "ratelimit_limit": f"{quota.reported};w={RATELIMIT_WINDOW}",
            "ratelimit_remaining": f"{remaining};w={RATELIMIT_WINDOW}",
        }
        if refused:
            return error(429, "TOOMANYREQUESTS", "rate limit", Retry_After=self.retry_after, **limits)
        return inner(seen).with_headers(**limits)


def hub_like(
    image: PushedImage,
    users: Mapping[str, str] | None = None,
    quotas: Mapping[str | None, Quota] | None = None,
    *,
    retry_after: str = "30",
    tls: ServerCertificate | None = None,
) -> FakeRegistry:
    """A registry with Docker Hub's habits, for what a real Distribution cannot be made to do:
    `image` under any repository name (each name a fresh cache miss), tokens from its own realm,
    a rate limit per account ("" anonymous), and no repositories under `missing/`."""
    registry = FakeRegistry(
        BearerRealm(users or {}),
        UnknownRepositories(lambda name: name.startswith("missing/")),
        RateLimit(quotas or {}, retry_after=retry_after),
        tls=tls,
    )
    registry.serve(ANY_REPOSITORY, image)
    return registry


# --- a port that must stay silent -----------------------------------------------------------
class Listener(_Server):
    """A loopback port that must receive nothing; it logs what reaches it and answers 200."""

    def __init__(self, body: bytes = b'{"internal": "secret"}') -> None:
        self._body = body
        super().__init__()

    def respond(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
        seen.status = 200
        return answer(200, self._body, Content_Type="application/json")


def _handler(server: _Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k: v for k, v in self.headers.items()},
                origin=server.url,
            )
            reply = server.respond(seen)
            self.send_response(reply.status)
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.unsized:
                self.send_header("Connection", "close")
                self.close_connection = True
            elif not any(name.lower() == "content-length" for name, _ in reply.headers):  # a scripted one wins
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command == "HEAD":
                server.note_sent(seen, 0)
                return
            written = 0
            try:  # in pieces, so what the client took before it hung up can be told
                for start in range(0, len(reply.body), WRITE_SIZE):
                    self.wfile.write(reply.body[start : start + WRITE_SIZE])
                    written += len(reply.body[start : start + WRITE_SIZE])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                server.note_sent(seen, written)

        do_GET = do_HEAD = do_POST = _answer

    return Handler
