"""A stand-in for the internet: an HTTP(S) proxy on 127.0.0.1 that records every request
a client sends it and refuses them all.

Container clients (podman, skopeo, containerd's ctr: Go programs) send every request for a
non-loopback host through `HTTPS_PROXY`/`HTTP_PROXY`, and never proxy loopback addresses.
With these variables pointing at the trap, the mirror and the upstream (127.0.0.1) are
reached directly, while any attempt to reach Docker Hub itself (a client falling back from
a failing mirror to `docker.io`) lands here, is recorded and fails at once. A test can thus
prove that a pull went through the mirror and nowhere else, and that a client whose mirror
fails does not quietly succeed some other way.
"""

from __future__ import annotations

import socketserver
import threading


class EgressTrap:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EgressTrap:
        trap = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 5

            def handle(self) -> None:
                try:
                    line = self.rfile.readline(8192).decode("latin-1").strip()
                except OSError:
                    return
                if not line:
                    return
                with trap._lock:
                    trap._lines.append(line)
                try:
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="egress-trap", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the trap first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        """Environment that sends a client's non-loopback traffic to the trap."""
        return {
            "HTTPS_PROXY": self.url,
            "https_proxy": self.url,
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
            "NO_PROXY": "",
            "no_proxy": "",
        }

    @property
    def requests(self) -> list[str]:
        """Request lines received, e.g. `CONNECT registry-1.docker.io:443 HTTP/1.1`."""
        with self._lock:
            return list(self._lines)

    @property
    def hosts(self) -> list[str]:
        """`host:port` (CONNECT) or absolute URL (plain HTTP) of each request received."""
        return [line.split(" ")[1] if " " in line else line for line in self.requests]

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()


def clean_environ(environ: dict[str, str]) -> dict[str, str]:
    """A copy of `environ` without any proxy settings (the trap's are added by the caller)."""
    return {k: v for k, v in environ.items() if "proxy" not in k.lower()}
