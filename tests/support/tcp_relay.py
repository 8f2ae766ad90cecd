"""A TCP relay on loopback in front of a server (PostgreSQL, an S3 service, Redis), that a test
switches to stand in for that server failing:

- "forward": bytes pass both ways;
- "hang": connections are accepted and never answered, and relayed connections stop moving
  bytes (a server that is hung, or a network that drops everything);
- "down": connections are accepted and closed at once (a server that went away).

Without a target it only hangs: a server that accepts and never answers. `connections` counts
what it accepted, so a test can tell whether a client tried (or retried).
"""

from __future__ import annotations

import select
import socket
import threading


class TcpRelay:
    def __init__(self, target: tuple[str, int] | None = None, mode: str = "forward"):
        self.target = target
        self.mode = mode if target else "hang"
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpRelay:
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "hang", "down") and (self.target or mode == "hang")
        self.mode = mode

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._held:
                try:
                    sock.close()
                except OSError:
                    pass
            self._held.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            if self.mode == "down":
                client.close()
                continue
            with self._lock:
                self._held.append(client)
            if self.mode == "hang":
                continue  # held open, never answered
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._held.append(server)
        pair = {client: server, server: client}
        try:
            while not self._stopped.is_set():
                if self.mode != "forward":
                    self._stopped.wait(0.05)  # frozen: nothing moves, nothing is closed
                    continue
                readable, _, _ = select.select(list(pair), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass
