"""The gunicorn worker the mirror runs: gthread, with every request's headers read in the
event loop, so a slow or silent client never holds a thread.

gthread hands a connection to a thread as soon as it is readable, and the thread then blocks
until the request's headers are in: a hundred clients that send half a request and wait
would hold every thread. Here the event loop reads what a connection sends (non-blocking)
until its headers are complete, then gives it to a thread with those bytes already in the
parser. A connection whose headers are not complete within MIRROR_CLIENT_HEADER_TIMEOUT
seconds is closed (counted from the connection, or from the first byte of a request on a
kept-alive one: idle keep-alive connections wait in the poller as gthread has them). The
connections open from one client address are capped (MIRROR_CONNECTIONS_PER_ADDRESS): those
beyond are closed as they are accepted. Both spare trusted proxies (MIRROR_TRUSTED_PROXIES),
which carry many clients over their connections.

The network allow-list (MIRROR_ALLOWED_NETWORKS) is judged at accept time on the peer's
address: a connection from outside it never reaches a thread; the event loop answers its
request with the same 403 as access.middleware (DENIED on /v2/), and only /healthz goes on.
A peer that is a trusted proxy forwards clients only X-Forwarded-For names: the middleware
judges those, as before.

On a plain-HTTP port, a TLS ClientHello gets a TLS alert at once: skopeo, podman and CRI-O
with `tls-verify=false` try HTTPS first and fall back to HTTP only when that fails (as with
Distribution), instead of waiting for their handshake timeout. When the server speaks TLS
itself, the handshake is also made in the event loop.
"""

from __future__ import annotations

from collections import defaultdict, deque
import errno
from functools import lru_cache, partial
import selectors
import ssl
import time
from urllib.parse import urlsplit

from gunicorn import http, util
from gunicorn import sock as gunicorn_sock
from gunicorn.workers.gthread import TConn, ThreadWorker

TLS_HANDSHAKE_RECORD = 0x16
# A TLS 1.0 record: fatal alert, handshake_failure.
TLS_HANDSHAKE_FAILURE_ALERT = bytes([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28])
HEADERS_END = b"\r\n\r\n"
READ_SIZE = 64 * 1024
# Request line and headers larger than this are refused (431), as nginx does beyond its
# large_client_header_buffers (32 KiB by default); registry requests send a few KiB at most.
MAX_HEADER_BYTES = 64 * 1024
_TOO_LARGE_BODY = b"request headers are too large\n"
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class Connection(TConn):
    """gthread's connection, plus what the event loop knows of it before a thread takes it."""

    def __init__(self, cfg, sock, client, server, peer, on_close):
        super().__init__(cfg, sock, client, server)
        self.peer = peer  # the address counted against the per-address cap, if any
        self.outsider = False  # outside the allow-list, judged on the peer address
        self.received = bytearray()  # the request so far (read by the event loop)
        self.deadline: float | None = None  # when its headers must be complete; None: not waiting
        self.handshaken = not cfg.is_ssl
        self._on_close = on_close
        self._closed = False

    def init(self) -> None:
        # The TLS wrap was done at accept time (the handshake in the event loop).
        self.initialized = True
        self.sock.setblocking(True)
        if self.parser is None:
            self.parser = http.RequestParser(self.cfg, self.sock, self.client)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)
        util.close(self.sock)


def refusal(path: str, method: str) -> bytes:
    """The answer to a client outside the allow-list, as access.middleware gives it."""
    return _refusal("/v2/" if path.startswith("/v2/") or path == "/v2" else "/", "HEAD" if method == "HEAD" else "GET")


@lru_cache(maxsize=4)
def _refusal(path: str, method: str) -> bytes:
    from access.middleware import refusal_response

    response = refusal_response(path, method)
    head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
    head += [f"{name}: {value}" for name, value in response.items()]
    if not response.has_header("Content-Length"):
        head.append(f"Content-Length: {len(response.content)}")
    head += ["X-Content-Type-Options: nosniff", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if method == "HEAD" else response.content)


def request_target(received: bytes) -> tuple[str, str]:
    """Method and path of the request line."""
    parts = bytes(received).split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    method = parts[0] if parts else ""
    path = urlsplit(parts[1]).path if len(parts) > 1 else ""
    return method, path


class MirrorWorker(ThreadWorker):
    def run(self) -> None:
        # Django is set up by now (the WSGI application is loaded before run).
        from django.conf import settings

        from access.clientaddress import trusted_proxies
        from access.networks import allowed_networks

        self.header_timeout = settings.MIRROR_CLIENT_HEADER_TIMEOUT
        self.per_address = settings.MIRROR_CONNECTIONS_PER_ADDRESS
        self.allowed = allowed_networks()
        self.proxies = trusted_proxies()
        self.open_by_peer: dict = defaultdict(int)
        # (deadline, connection) in deadline order; an entry whose deadline is no longer the
        # connection's is stale (its headers came, or it was re-armed) and is skipped.
        self.reading: deque = deque()
        self.ssl_context = gunicorn_sock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        super().run()

    # --- accepting ------------------------------------------------------------------------
    def accept(self, server, listener) -> None:
        from access.clientaddress import in_networks, parse_address

        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        peer = parse_address(client[0]) if isinstance(client, tuple) and client else None
        proxy = in_networks(peer, self.proxies)
        counted = None
        if peer is not None and not proxy and self.per_address > 0:
            with self._lock:
                if self.open_by_peer[peer] >= self.per_address:
                    self.log.debug("closing a connection from %s: %d already open", peer, self.per_address)
                    util.close(sock)
                    return
                self.open_by_peer[peer] += 1
            counted = peer
        conn = Connection(self.cfg, sock, client, server, counted, self._forget)
        conn.outsider = bool(self.allowed) and peer is not None and not proxy and not in_networks(peer, self.allowed)
        if self.ssl_context is not None:
            try:
                conn.sock = self.ssl_context.wrap_socket(
                    sock,
                    server_side=True,
                    do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                )
            except (OSError, ValueError):
                conn.close()
                return
        self.nr_conns += 1
        with self._lock:
            self._expect_request(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _forget(self, conn: Connection) -> None:
        """A connection closed: one fewer open from its address."""
        if conn.peer is None:
            return
        with self._lock:
            self.open_by_peer[conn.peer] -= 1
            if self.open_by_peer[conn.peer] <= 0:
                del self.open_by_peer[conn.peer]

    def _expect_request(self, conn: Connection) -> None:
        """Start the header clock (under the lock)."""
        conn.deadline = time.monotonic() + self.header_timeout
        self.reading.append((conn.deadline, conn))

    # --- a kept-alive connection sends its next request --------------------------------------
    def on_client_socket_readable(self, conn: Connection, client) -> None:
        with self._lock:
            try:
                self._keep.remove(conn)
            except ValueError:  # closed for its keep-alive timeout meanwhile
                return
            self._expect_request(conn)
            self.poller.modify(client, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        self._on_request_bytes(conn, client)

    # --- reading the request line and headers, in the event loop ----------------------------
    def _on_request_bytes(self, conn: Connection, _fileobj) -> None:
        try:
            data = self._receive(conn)
        except (OSError, ValueError):  # ssl.SSLError is an OSError: a failed handshake
            self._drop(conn)
            return
        if data is None:  # nothing (more) yet
            return
        if not data:  # the client closed
            self._drop(conn)
            return
        if conn.parser is None and not conn.received and not self.cfg.is_ssl and data[0] == TLS_HANDSHAKE_RECORD:
            self._answer(conn, TLS_HANDSHAKE_FAILURE_ALERT)
            return
        start = max(len(conn.received) - len(HEADERS_END) + 1, 0)
        conn.received += data
        if conn.received.find(HEADERS_END, start) >= 0:
            self._dispatch(conn)
        elif len(conn.received) > MAX_HEADER_BYTES:
            self._answer(conn, HEADERS_TOO_LARGE)

    def _receive(self, conn: Connection) -> bytes | None:
        """What the client sent, b"" when it closed, None when nothing is there yet."""
        sock = conn.sock
        if not conn.handshaken:
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLWantWriteError:  # rare: the socket's send buffer is full
                with self._lock:
                    self.poller.modify(
                        sock, selectors.EVENT_READ | selectors.EVENT_WRITE, partial(self._on_request_bytes, conn)
                    )
                return None
            conn.handshaken = True
            with self._lock:
                self.poller.modify(sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        chunks = []
        while True:  # TLS may hold decrypted bytes the poller does not see: take them all
            try:
                chunk = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                if not chunks:
                    return b""
                break
            chunks.append(chunk)
            if self.ssl_context is None or sum(map(len, chunks)) > MAX_HEADER_BYTES:
                break
        return b"".join(chunks) if chunks else None

    def _dispatch(self, conn: Connection) -> None:
        """The headers are in: a thread takes the request, its bytes already in the parser."""
        with self._lock:
            self.poller.unregister(conn.sock)
            conn.deadline = None
        if conn.outsider:
            from access.middleware import OPEN_PATHS

            method, path = request_target(conn.received)
            if path not in OPEN_PATHS:
                self._answer(conn, refusal(path, method), registered=False)
                return
        received, conn.received = bytes(conn.received), bytearray()
        conn.init()
        conn.parser.unreader.unread(received)
        self._wrap_future(self.tpool.submit(self.handle, conn), conn)

    def _answer(self, conn: Connection, answer: bytes, registered: bool = True) -> None:
        """A short answer from the event loop (it fits the socket's buffer), then close."""
        try:
            conn.sock.send(answer)
        except OSError:
            pass
        self._drop(conn, registered)

    def _drop(self, conn: Connection, registered: bool = True) -> None:
        with self._lock:
            if registered:
                try:
                    self.poller.unregister(conn.sock)
                except (KeyError, ValueError, OSError):
                    pass
            conn.deadline = None
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self) -> None:
        super().murder_keepalived()
        now = time.monotonic()
        while True:
            with self._lock:
                if not self.reading:
                    return
                deadline, conn = self.reading[0]
                if conn.deadline == deadline and deadline > now:
                    return
                self.reading.popleft()
                if conn.deadline != deadline:
                    continue  # stale
            self.log.debug(
                "closing a connection from %s: no complete request headers in %ss", conn.client, self.header_timeout
            )
            self._drop(conn)
