"""A registry on loopback with Docker Hub's habits, for what a real Distribution cannot be
made to do: a rate limit per account.

It serves one image under any repository name (so each name is a fresh cache miss), asks for
Bearer tokens from its own realm (HTTP Basic per user, anonymous allowed), and counts each
user's manifest GETs: every answer carries `ratelimit-limit`/`ratelimit-remaining` (with
their window), and after a user's `pulls` GETs its manifests are answered 429 with
`Retry-After`, the way Docker Hub answers an account that used up its pulls. Repositories
under `missing/` do not exist (404 NAME_UNKNOWN).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import ssl
import threading
from urllib.parse import urlsplit

from tests.support.images import PushedImage
from tests.support.tls import ServerCertificate

WINDOW = 21600


@dataclass
class Quota:
    pulls: int  # manifest GETs answered before the 429s start
    reported: int  # what `ratelimit-remaining` says before the first GET
    used: int = 0


@dataclass
class Logged:
    method: str
    path: str
    user: str | None  # None: anonymous
    status: int


@dataclass
class LimitedRegistry:
    image: PushedImage
    users: dict[str, str]  # username -> password
    quotas: dict[str, Quota] = field(default_factory=dict)  # username ("" anonymous) -> quota
    retry_after: str = "30"
    tls: ServerCertificate | None = None  # serve HTTPS with this certificate
    requests: list[Logged] = field(default_factory=list)
    token_requests: list[tuple[str | None, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> LimitedRegistry:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def manifest_gets(self, user: str | None = None) -> list[Logged]:
        return [
            r
            for r in self.requests
            if r.method == "GET" and "/manifests/" in r.path and (user is None or r.user == user)
        ]

    # --- answers ----------------------------------------------------------------------------------
    def _token(self, authorization: str | None) -> tuple[int, dict, bytes]:
        user = None
        if authorization and authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(name) != password:
                self.token_requests.append((name, 401))
                return (
                    401,
                    {"WWW-Authenticate": f'Basic realm="{self.url}/token"'},
                    b'{"details": "incorrect username or password"}',
                )
            user = name
        self.token_requests.append((user, 200))
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"token": f"tok-{user or ''}", "expires_in": 300}).encode(),
        )

    def _registry(self, method: str, path: str, user: str) -> tuple[int, dict, bytes]:
        image = self.image
        if path.startswith("/v2/missing/"):
            body = json.dumps(
                {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}
            )
            return 404, {"Content-Type": "application/json"}, body.encode()
        if "/manifests/" in path:
            quota = self.quotas.get(user)
            headers: dict[str, str] = {}
            if quota is not None:
                if method == "GET" and quota.used >= quota.pulls:
                    headers = {
                        "ratelimit-limit": f"{quota.reported};w={WINDOW}",
                        "ratelimit-remaining": f"0;w={WINDOW}",
                        "Retry-After": self.retry_after,
                        "Content-Type": "application/json",
                    }
                    return 429, headers, b'{"errors": [{"code": "TOOMANYREQUESTS", "message": "rate limit"}]}'
                if method == "GET":
                    quota.used += 1
                remaining = max(quota.reported - quota.used, 0)
                headers = {
                    "ratelimit-limit": f"{quota.reported};w={WINDOW}",
                    "ratelimit-remaining": f"{remaining};w={WINDOW}",
                }
            reference = path.rsplit("/", 1)[-1]
            if reference in (image.tag, image.digest):
                return (
                    200,
                    {**headers, "Content-Type": image.media_type, "Docker-Content-Digest": image.digest},
                    image.manifest,
                )
            return 404, headers, b""
        for blob in image.blobs:
            if path.endswith(f"/blobs/{blob.digest}"):
                return 200, {"Content-Type": "application/octet-stream"}, blob.data
        if path == "/v2/":
            return 200, {"Content-Type": "application/json"}, b"{}"
        return 404, {}, b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                authorization = self.headers.get("Authorization")
                with registry._lock:
                    if path == "/token":
                        status, headers, body = registry._token(authorization)
                        user = None
                    elif not (authorization or "").startswith("Bearer tok-"):
                        challenge = f'Bearer realm="{registry.url}/token",service="limited"'
                        status, headers, body, user = 401, {"WWW-Authenticate": challenge}, b"", None
                    else:
                        user = authorization[len("Bearer tok-") :]
                        status, headers, body = registry._registry(self.command, path, user)
                    registry.requests.append(Logged(self.command, path, user, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            do_HEAD = do_GET

        return Handler
