"""The gunicorn worker the mirror runs: gthread, plus a fast answer to TLS on the HTTP port.

skopeo, podman and CRI-O with `tls-verify=false` first try HTTPS and fall back to HTTP only
when that fails. Plain gunicorn waits for an HTTP request line that a TLS ClientHello never
completes, so every such client stalls for its 10-second handshake timeout. A TLS alert
answers at once and the client falls back to HTTP immediately, as with Distribution.
"""
import socket

from gunicorn.workers.gthread import ThreadWorker

TLS_HANDSHAKE_RECORD = 0x16
# A TLS 1.0 record: fatal alert, handshake_failure.
TLS_HANDSHAKE_FAILURE_ALERT = bytes([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28])


class MirrorWorker(ThreadWorker):
    def handle(self, conn):
        if self.cfg.is_ssl:  # this port speaks TLS: a ClientHello is what it expects
            return super().handle(conn)
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            first = b""
        except OSError:
            return (False, conn)
        if first and first[0] == TLS_HANDSHAKE_RECORD:
            try:
                conn.sock.sendall(TLS_HANDSHAKE_FAILURE_ALERT)
            except OSError:
                pass
            return (False, conn)
        return super().handle(conn)
