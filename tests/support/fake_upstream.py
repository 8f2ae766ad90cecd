"""A deliberately broken registry (no auth) for testing the mirror's digest checks.

It serves `library/bad:latest`: a valid schema2 manifest whose config blob is
correct but whose single layer is served with one byte flipped, so the bytes no
longer hash to the digest the manifest (and the Docker-Content-Digest header)
promise. Same length, so only a digest check catches it.
"""

from __future__ import annotations

from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
from urllib.parse import urlsplit

from .images import DOCKER_MANIFEST, build_image, sha256_digest


class FakeUpstream:
    """Threaded HTTP server on 127.0.0.1 (ephemeral port) acting as a corrupt registry."""

    repository = "library/bad"
    tag = "latest"

    def __init__(self, *, layer_size: int = 64 * 1024, seed: int = 4242) -> None:
        image = build_image(self.repository, self.tag, layer_sizes=[layer_size], seed=seed)
        self.image = image
        self.manifest: bytes = image.manifest
        self.manifest_digest: str = image.digest
        self.media_type: str = DOCKER_MANIFEST
        self.config = image.config
        self.layer = image.layers[0]  # the blob as the manifest describes it
        corrupt = bytearray(self.layer.data)
        corrupt[len(corrupt) // 2] ^= 0xFF  # flip one byte in the middle
        self.served_layer: bytes = bytes(corrupt)
        assert sha256_digest(self.served_layer) != self.layer.digest
        # digest -> bytes actually served
        self.blobs: dict[str, bytes] = {self.config.digest: self.config.data, self.layer.digest: self.served_layer}
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bad_layer_digest(self) -> str:
        return self.layer.digest

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeUpstream:
        if self._httpd is None:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
            self._httpd.daemon_threads = True
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-upstream", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "fake upstream not started"
        return self._httpd.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # ------------------------------------------------------------------ counters
    def count(self, path: str, method: str | None = None) -> int:
        """Requests seen for `path` (query string ignored), optionally only for `method`."""
        with self._lock:
            if method is not None:
                return self._counts[(method, path)]
            return sum(n for (_, p), n in self._counts.items() if p == path)

    def blob_path(self, digest: str) -> str:
        return f"/v2/{self.repository}/blobs/{digest}"

    def blob_requests(self, digest: str, method: str | None = "GET") -> int:
        return self.count(self.blob_path(digest), method)

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def _hit(self, method: str, path: str) -> None:
        with self._lock:
            self._counts[(method, path)] += 1


def _make_handler(fake: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    prefix = f"/v2/{fake.repository}/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
            self._send(status, body, {"Content-Type": "application/json"})

        def _handle(self) -> None:
            path = urlsplit(self.path).path
            fake._hit(self.command, path)
            if path in ("/v2", "/v2/"):
                self._send(200, b"{}", {"Content-Type": "application/json"})
                return
            if not path.startswith(prefix):
                self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
                return
            kind, _, ref = path[len(prefix) :].partition("/")
            if kind == "manifests":
                if ref in (fake.tag, fake.manifest_digest):
                    self._send(
                        200,
                        fake.manifest,
                        {"Content-Type": fake.media_type, "Docker-Content-Digest": fake.manifest_digest},
                    )
                else:
                    self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                return
            if kind == "blobs" and ref in fake.blobs:
                # Advertise the *claimed* digest, as a lying/corrupting upstream would.
                self._send(
                    200,
                    fake.blobs[ref],
                    {"Content-Type": "application/octet-stream", "Docker-Content-Digest": ref},
                )
                return
            if kind == "blobs":
                self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
                return
            self._error(404, "NAME_UNKNOWN", "not found")

        def do_GET(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

    return Handler
