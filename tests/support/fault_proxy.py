"""An HTTP proxy between the mirror and its upstream, to test what the mirror does when its
upstream misbehaves: it slows bodies down, cuts a blob download midway, or is switched to fail
every request (drop connections unanswered: an unreachable upstream; answer 500; answer 429
with a Retry-After) and back to forwarding (recovery). It logs every request it receives."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import socket
import threading
import time
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
FORWARD, DROP, ERROR, RATE_LIMITED = "forward", "drop", "500", "429"  # what `mode` makes of every request


class FaultProxy:
    def __init__(self, upstream_url: str, *, retry_after: int = 17):
        target = urlsplit(upstream_url)
        self.target_host, self.target_port = target.hostname, target.port
        self.mode = FORWARD
        self.retry_after = retry_after  # the 429s' Retry-After
        self.paths: list[str] = []  # every request received, in order ("GET /v2/...")
        self.bytes_per_second: float | None = None  # throttle for every body, when set
        self._cuts: list[tuple[str, int]] = []  # (path fragment, bytes to send before cutting)
        self._lock = threading.Lock()
        self.cut_count = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.paths)

    def wait_quiet(self, seconds: float = 2.0, timeout: float = 60.0) -> int:
        """Wait until no request arrived for `seconds` (a process's start-up calls are over)."""
        deadline = time.monotonic() + timeout
        last, since = self.count, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if self.count != last:
                last, since = self.count, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return last
        raise AssertionError("the upstream never went quiet")

    def cut_next(self, path_fragment: str, after_bytes: int) -> None:
        """The next GET whose path contains `path_fragment` dies after `after_bytes` of body."""
        with self._lock:
            self._cuts.append((path_fragment, after_bytes))

    def _take_cut(self, method: str, path: str) -> int | None:
        with self._lock:
            for index, (fragment, after) in enumerate(self._cuts):
                if method == "GET" and fragment in path:
                    del self._cuts[index]
                    return after
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def fail(self, mode: str) -> None:
                if mode == DROP:
                    self.close_connection = True
                    self.connection.close()  # no answer at all
                    return
                code = "UNKNOWN" if mode == ERROR else "TOOMANYREQUESTS"
                body = json.dumps({"errors": [{"code": code, "message": f"switched to {mode}"}]}).encode()
                self.send_response(int(mode))
                self.send_header("Content-Type", "application/json")
                if mode == RATE_LIMITED:
                    self.send_header("Retry-After", str(proxy.retry_after))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def forward(self) -> None:
                with proxy._lock:
                    proxy.paths.append(f"{self.command} {self.path}")
                mode = proxy.mode
                if mode != FORWARD:
                    self.fail(mode)
                    return
                upstream = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, headers=headers)
                response = upstream.getresponse()
                cut_after = proxy._take_cut(self.command, self.path) if response.status == 200 else None
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.end_headers()
                sent = 0
                if self.command != "HEAD":
                    while True:
                        chunk = response.read(64 * 1024)
                        if not chunk:
                            break
                        if cut_after is not None and sent + len(chunk) > cut_after:
                            self.wfile.write(chunk[: cut_after - sent])
                            self.wfile.flush()
                            proxy.cut_count += 1
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            upstream.close()
                            return
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if proxy.bytes_per_second:
                            time.sleep(len(chunk) / proxy.bytes_per_second)
                upstream.close()

            do_GET = forward
            do_HEAD = forward

        return Handler
