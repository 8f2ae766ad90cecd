"""An HTTP proxy between the mirror and its upstream that can slow responses down or cut a
blob download midway, to test what the mirror does when its upstream misbehaves."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import socket
import threading
import time
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}


class FaultProxy:
    def __init__(self, upstream_url: str):
        target = urlsplit(upstream_url)
        self.target_host, self.target_port = target.hostname, target.port
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

            def forward(self) -> None:
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
