"""Read the access logs of the mirror (gunicorn) and of the upstream (Distribution), with
the client's User-Agent, so a test can tell who asked for what.

Both write one Apache "combined" line per request:
    127.0.0.1 - - [29/Nov/2026:02:45:17 +0000] "GET /v2/x/blobs/sha256:ab…?ns=docker.io HTTP/1.1" 200 526 "-" "containerd/1.6.20"
Other lines in the same file (application logs, Distribution's logrus lines) are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import time
from typing import NamedTuple
from urllib.parse import parse_qs

_COMBINED = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) \S+ "[^"]*" "(?P<agent>[^"]*)"'
)


class Entry(NamedTuple):
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    status: int
    user_agent: str

    @property
    def is_blob(self) -> bool:
        return "/blobs/" in self.path

    def digest(self) -> str | None:
        """The digest a blob or manifest-by-digest request named."""
        last = self.path.rsplit("/", 1)[-1]
        return last if ":" in last else None


class AccessLog:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def _lines(self) -> list[str]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")  # a trailing partial line may still be being written
        return data[: end + 1].decode("utf-8", "replace").splitlines() if end >= 0 else []

    def settle(self, quiet: float = 0.2, timeout: float = 3.0) -> None:
        """Wait until the file stops growing: servers log a request just after answering it."""
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.path.stat().st_size if self.path.exists() else 0
            now = time.monotonic()
            if size != last:
                last, stable_since = size, now
            elif now - stable_since >= quiet:
                return
            time.sleep(0.03)

    def entries(self, since: int = 0, *, settle: bool = True) -> list[Entry]:
        if settle:
            self.settle()
        found = []
        for line in self._lines():
            m = _COMBINED.match(line)
            if m:
                path, _, query = m["uri"].partition("?")
                found.append(Entry(m["method"], path, parse_qs(query), int(m["status"]), m["agent"]))
        return found[since:]

    def mark(self) -> int:
        """Pass as `since=` to see only the requests made after this call."""
        return len(self.entries())

    def by_agent(self, prefix: str, since: int = 0) -> list[Entry]:
        return [e for e in self.entries(since) if e.user_agent.startswith(prefix)]


def blob_gets(entries: list[Entry], digest: str) -> list[Entry]:
    """Successful or not, the GETs of blobs/<digest> (auth challenges excluded)."""
    return [e for e in entries if e.method == "GET" and e.path.endswith(f"/blobs/{digest}") and e.status != 401]
