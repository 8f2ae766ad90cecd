"""A registry on loopback that answers whatever a test scripts: the hostile or broken upstream.

Routes are set per method and path (`script`), or a whole image is served honestly (`serve`)
and then single answers are replaced. Every request is logged with its headers, so a test can
assert what the mirror sent (credentials, Accept) and what it never asked. `Listener` is a
loopback port that must receive nothing: a stand-in for an internal service or a foreign token
realm; it logs every connection and request it gets. Either serves HTTPS when given a
certificate (tests/support/tls.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import ssl
import threading
from urllib.parse import parse_qs, urlsplit

from tests.support.images import PushedImage, PushedIndex
from tests.support.tls import ServerCertificate


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # Send no Content-Length and close the connection after the body (an upstream that does not say the size).
    unsized: bool = False


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


Script = Answer | Callable[[Seen], Answer]


def answer(status: int = 200, body: bytes | str | dict = b"", unsized: bool = False, **headers: str) -> Answer:
    """`answer(200, b"...", Content_Type="text/html")`: header names with `_` for `-`."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content_Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    return Answer(status, tuple((name.replace("_", "-"), value) for name, value in headers.items()), body, unsized)


def error(status: int, code: str, message: str = "scripted error", **headers: str) -> Answer:
    return answer(status, {"errors": [{"code": code, "message": message, "detail": None}]}, **headers)


class _Server:
    """A threaded HTTP server on 127.0.0.1 and an ephemeral port, stopped by `stop`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ServerCertificate | None = None):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
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


class HostileRegistry(_Server):
    """Answers scripted routes; anything unscripted is a 404 in the registry's error format."""

    def __init__(self, tls: ServerCertificate | None = None) -> None:
        self.requests: list[Seen] = []
        self._routes: dict[tuple[str, str], Script] = {}
        self._lock = threading.Lock()
        self._sent: list[tuple[Seen, int]] = []
        super().__init__(_handler(self._respond, self._note_sent), tls)

    def script(self, method: str, path: str, script: Script) -> None:
        """Answer `method path` (query ignored) with `script`; HEAD defaults to GET's answer, bodiless."""
        with self._lock:
            self._routes[(method, path)] = script

    def serve(self, repository: str, image: PushedImage | PushedIndex, tag: str | None = None) -> None:
        """Serve an image (an index with its children) honestly: manifests by tag and digest, blobs."""
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
            self.script(
                "GET",
                f"/v2/{repository}/blobs/{blob.digest}",
                answer(200, blob.data, Content_Type="application/octet-stream", Docker_Content_Digest=blob.digest),
            )

    def seen(self, path: str | None = None, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                s for s in self.requests if (path is None or s.path == path) and (method is None or s.method == method)
            ]

    def sent(self, path: str, method: str = "GET") -> list[int]:
        """Body bytes the client took (the socket accepted) for each answered `method path`."""
        with self._lock:
            return [count for s, count in self._sent if (s.path, s.method) == (path, method)]

    def _note_sent(self, seen: Seen, count: int) -> None:
        with self._lock:
            self._sent.append((seen, count))

    def _respond(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            script = self._routes.get((seen.method, seen.path))
            if script is None and seen.method == "HEAD":
                script = self._routes.get(("GET", seen.path))
        if script is None:
            if seen.path in ("/v2", "/v2/"):
                return answer(200, {})
            return error(404, "NAME_UNKNOWN" if "/tags/" in seen.path else "MANIFEST_UNKNOWN", "not scripted")
        return script(seen) if callable(script) else script


class Listener(_Server):
    """A loopback port that must receive nothing; it logs what reaches it and answers 200."""

    def __init__(self, body: bytes = b'{"internal": "secret"}') -> None:
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._body = body
        super().__init__(_handler(self._respond))

    def _respond(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
        return answer(200, self._body, Content_Type="application/json")


WRITE_SIZE = 64 * 1024


def _handler(
    respond: Callable[[Seen], Answer], on_sent: Callable[[Seen, int], None] | None = None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen = Seen(self.command, parts.path, parse_qs(parts.query), {k: v for k, v in self.headers.items()})
            reply = respond(seen)
            self.send_response(reply.status)
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.unsized:
                self.send_header("Connection", "close")
                self.close_connection = True
            elif not any(
                name.lower() == "content-length" for name, _ in reply.headers
            ):  # a scripted one wins (a HEAD's)
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            written = 0
            try:  # in pieces, so what the client took before it hung up can be told
                for start in range(0, len(reply.body), WRITE_SIZE):
                    self.wfile.write(reply.body[start : start + WRITE_SIZE])
                    written += len(reply.body[start : start + WRITE_SIZE])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                if on_sent is not None:
                    on_sent(seen, written)

        do_GET = do_HEAD = do_POST = _answer

    return Handler
