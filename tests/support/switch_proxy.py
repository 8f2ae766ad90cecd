"""An HTTP proxy in front of an upstream that counts every request it receives and can be
switched to fail: drop connections unanswered (an unreachable upstream), answer 500, or
answer 429 with a Retry-After, then forward again (recovery)."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
import time
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
FORWARD, DROP, ERROR, RATE_LIMITED = "forward", "drop", "500", "429"


class SwitchProxy:
    def __init__(self, upstream_url: str, *, retry_after: int = 17):
        target = urlsplit(upstream_url)
        self.target_host, self.target_port = target.hostname, target.port
        self.mode = FORWARD
        self.retry_after = retry_after
        self.paths: list[str] = []  # every request received, in order (method and path)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.paths)

    def start(self) -> SwitchProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_one(self) -> None:
                with proxy._lock:
                    proxy.paths.append(f"{self.command} {self.path}")
                mode = proxy.mode
                if mode == DROP:
                    self.close_connection = True
                    self.connection.close()  # no answer at all
                    return
                if mode in (ERROR, RATE_LIMITED):
                    code = "UNKNOWN" if mode == ERROR else "TOOMANYREQUESTS"
                    body = json.dumps({"errors": [{"code": code, "message": f"switched to {mode}"}]}).encode()
                    headers = {"Content-Type": "application/json"}
                    if mode == RATE_LIMITED:
                        headers["Retry-After"] = str(proxy.retry_after)
                    self.answer(int(mode), headers, body)
                    return
                upstream = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, headers=headers)
                response = upstream.getresponse()
                body = response.read()
                self.answer(
                    response.status,
                    {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}},
                    body,
                )
                upstream.close()

            do_GET = handle_one
            do_HEAD = handle_one

        return Handler
