"""Memory of a whole server: every process in the tree under its root pid, read from /proc.

Plain /proc instead of psutil: Linux is the only target and it keeps the benchmark free of
extra dependencies.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # the process ended while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_pids(*roots: int) -> list[int]:
    """The roots and all their descendants (that are alive right now)."""
    children = _children_map()
    pids, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def _pss(pid: int) -> int:
    """Proportional set size: shared pages (forked workers) counted once across the tree."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def tree_memory(roots: tuple[int, ...]) -> tuple[int, int, dict[int, int]]:
    """(sum of RSS, sum of PSS, RSS by pid) in bytes over the process trees under `roots`."""
    rss = {p: _rss(p) for p in tree_pids(*roots)}
    return sum(rss.values()), sum(_pss(p) for p in rss), rss


class PeakMemory:
    """Samples process trees (a server's, or each replica's) in a background thread while the
    `with` block runs; the figures are their sums."""

    def __init__(self, roots: list[int], interval: float = 0.1) -> None:
        self.roots = tuple(roots)
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self.breakdown: list[tuple[str, int]] = []  # (command line, RSS) of each process at the RSS peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _sample(self) -> None:
        rss, pss, by_pid = tree_memory(self.roots)
        if rss > self.peak_rss:
            self.peak_rss = rss
            self.breakdown = [(_name(p), r) for p, r in by_pid.items()]
        self.peak_pss = max(self.peak_pss, pss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()  # one last look, so even a very short block has a sample
