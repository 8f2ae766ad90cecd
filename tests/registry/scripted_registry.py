"""A registry on loopback that serves one image and misbehaves on cue: answers the first
requests with an error status, or counts its rate limit down on every manifest GET the way
Docker Hub does. For what the real upstream of the tests cannot be made to do."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

from tests.support.images import PushedImage


class ScriptedRegistry:
    def __init__(
        self, image: PushedImage, *, fail_first: int = 0, fail_status: int = 503, ratelimit: int | None = None
    ):
        self.image = image
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.ratelimit = ratelimit  # pulls left; each manifest GET spends one
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def gets(self, kind: str) -> int:
        return sum(
            1 for method, path, status in self.requests if method == "GET" and f"/{kind}/" in path and status == 200
        )

    def __enter__(self) -> ScriptedRegistry:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return self.fail_status, {}, b""
            headers = {}
            if self.ratelimit is not None and "/manifests/" in path:
                if method == "GET":
                    self.ratelimit = max(self.ratelimit - 1, 0)
                headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": f"{self.ratelimit};w=21600"}
        image = self.image
        reference = path.rsplit("/", 1)[-1]
        if "/manifests/" in path and reference in (image.tag, image.digest):
            return (
                200,
                {**headers, "Content-Type": image.media_type, "Docker-Content-Digest": image.digest},
                image.manifest,
            )
        for blob in image.blobs:
            if path.endswith(f"/blobs/{blob.digest}"):
                return 200, {"Content-Type": "application/octet-stream"}, blob.data
        return 404, {}, b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                status, headers, body = registry._answer(self.command, self.path)
                with registry._lock:
                    registry.requests.append((self.command, self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            do_HEAD = do_GET

        return Handler
