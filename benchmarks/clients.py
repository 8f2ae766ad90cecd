"""The clients that load both systems, identically: skopeo, curl, wrk or a bounded Python load.

Given several replicas of a system, the clients of one measurement take them in turn.
Every client process has a timeout and is killed when the run is interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import hashlib
import http.client
from pathlib import Path
import re
import subprocess
import threading
import time

import requests

from benchmarks.workload import ImageRef
from tests.support.images import MANIFEST_ACCEPT
from tests.support.skopeo import Skopeo


@dataclass
class ProcResult:
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str


def run_parallel(
    commands: Sequence[Sequence[str]], timeout: float, env: dict[str, str] | None = None
) -> tuple[float, list[ProcResult]]:
    """Start every command at once; return (seconds until the last one ended, results)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        start = time.monotonic()
        for cmd in commands:
            procs.append(
                subprocess.Popen(
                    list(cmd),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = start + timeout
        results: list[ProcResult] = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))
                results.append(ProcResult(proc.returncode, out, err))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                results.append(ProcResult(None, out, err + "\n(killed at the timeout)"))
        return time.monotonic() - start, results
    finally:
        for proc in procs:  # interrupted or failed: leave nothing running
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def skopeo_copy_cmd(skopeo: Skopeo, host: str, reference: str, dest: Path) -> list[str]:
    return [
        skopeo.binary,
        "--policy",
        str(skopeo.policy),
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{host}/{reference}",
        f"dir:{dest}",
    ]


def skopeo_pulls(
    skopeo: Skopeo, hosts: Sequence[str], reference: str, dests: Sequence[Path], timeout: float
) -> tuple[float, list[ProcResult]]:
    """`len(dests)` simultaneous `skopeo copy` processes of one image, each into its own dir,
    the i-th from hosts[i % len(hosts)]."""
    cmds = [skopeo_copy_cmd(skopeo, hosts[i % len(hosts)], reference, d) for i, d in enumerate(dests)]
    return run_parallel(cmds, timeout, env=skopeo.env)


def curl_downloads(urls: Sequence[str], timeout: float) -> tuple[float, list[int], list[str]]:
    """One curl process per URL, all at once, each downloading into /dev/null and following a
    redirect (to the object store) as container clients do.

    Returns (seconds until the last finished, bytes each received, errors).
    """
    cmds = [
        ["curl", "-sS", "-f", "-L", "--noproxy", "*", "-o", "/dev/null", "-w", "%{size_download}", url] for url in urls
    ]
    seconds, results = run_parallel(cmds, timeout)
    sizes, errors = [], []
    for r in results:
        sizes.append(int(r.stdout.strip() or 0) if r.returncode == 0 else 0)
        if r.returncode != 0:
            errors.append(f"curl exit {r.returncode}: {r.stderr.strip()[:200]}")
    return seconds, sizes, errors


def python_pull(session: requests.Session, base_url: str, image: ImageRef) -> None:
    """One pull the way a container client does it: ping, manifest by tag, every blob (digest checked)."""
    session.get(f"{base_url}/v2/", timeout=30).raise_for_status()
    r = session.get(
        f"{base_url}/v2/{image.repository}/manifests/{image.tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30
    )
    r.raise_for_status()
    if "sha256:" + hashlib.sha256(r.content).hexdigest() != image.digest:
        raise RuntimeError(f"manifest of {image.reference} has the wrong digest")
    for blob in image.blobs:
        h = hashlib.sha256()
        with session.get(f"{base_url}/v2/{image.repository}/blobs/{blob.digest}", stream=True, timeout=60) as br:
            br.raise_for_status()
            for chunk in br.iter_content(1 << 20):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != blob.digest:
            raise RuntimeError(f"blob {blob.digest} of {image.reference} came back wrong")


def new_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only; never through a proxy from the environment
    return s


# --------------------------------------------------------------------------- HTTP load
@dataclass
class LoadResult:
    requests: int
    errors: int  # non-2xx answers and socket errors
    seconds: float

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0


_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(output: str) -> LoadResult:
    m = _WRK_REQUESTS.search(output)
    if m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    errors = sum(int(x) for x in _WRK_NON2XX.findall(output))
    s = _WRK_SOCKET.search(output)
    if s:
        errors += sum(int(x) for x in s.groups())
    return LoadResult(int(m.group(1)), errors, float(m.group(2)) * _UNIT[m.group(3)])


def wrk_load(url: str, headers: dict[str, str], seconds: float, connections: int, threads: int = 2) -> LoadResult:
    threads = min(threads, connections)  # wrk wants at least one connection per thread
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    return parse_wrk(out.stdout)


def python_load(url: str, headers: dict[str, str], seconds: float, connections: int) -> LoadResult:
    """Keep-alive GETs from `connections` threads for `seconds` (no extra tools; slower than wrk)."""
    m = re.match(r"http://([^/:]+):(\d+)(/.*)", url)
    if m is None:
        raise ValueError(url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    counts = [[0, 0] for _ in range(connections)]  # [requests, errors] per thread
    deadline = time.monotonic() + seconds

    def worker(slot: list[int]) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        while time.monotonic() < deadline:
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                slot[0] += 1
                slot[1] += resp.status >= 300
            except (OSError, http.client.HTTPException):
                slot[0] += 1
                slot[1] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    elapsed = time.monotonic() - start
    return LoadResult(sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed)


def http_load(kind: str, urls: Sequence[str], headers: dict[str, str], seconds: float, connections: int) -> LoadResult:
    """`connections` keep-alive connections spread evenly over `urls` (one per replica), all
    loaded at the same time; the requests and errors are summed."""

    def one(url: str, conns: int) -> LoadResult:
        if kind == "wrk":
            return wrk_load(url, headers, seconds, conns)
        return python_load(url, headers, seconds, conns)

    shares = [connections // len(urls) + (i < connections % len(urls)) for i in range(len(urls))]
    with ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(one, urls, shares))
    return LoadResult(sum(r.requests for r in results), sum(r.errors for r in results), max(r.seconds for r in results))
