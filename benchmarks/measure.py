"""Each measurement, done the same way for either system.

Upstream traffic is read from the upstream's own access log (and the token server's counter),
so it counts what really reached the upstream, whatever the system did. A system with several
replicas is measured across all of them: the clients of a measurement take the replicas in turn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
import shutil
import statistics
import time

from benchmarks.clients import (
    curl_downloads,
    http_load,
    new_session,
    python_pull,
    run_parallel,
    skopeo_copy_cmd,
    skopeo_pulls,
)
from benchmarks.memory import PeakMemory
from benchmarks.params import MiB, Params
from benchmarks.systems import Stack, System
from benchmarks.workload import ImageRef, Workload
from tests.support.images import MANIFEST_ACCEPT


@dataclass
class Bench:
    stack: Stack
    params: Params
    workload: Workload


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def blob_gets(bench: Bench, since: int, digests: Sequence[str]) -> dict[str, int]:
    """Upstream GETs per blob since the log mark; 401 challenges transfer nothing and are not counted."""
    counts = {d: 0 for d in digests}
    for r in bench.stack.upstream.requests_log(since):
        if r.method == "GET" and r.status != 401 and "/blobs/" in r.path:
            digest = r.path.rsplit("/blobs/", 1)[1]
            if digest in counts:
                counts[digest] += 1
    return counts


def _skopeo_once(bench: Bench, system: System, image: ImageRef, name: str, replica: int = 0) -> float:
    dest = bench.stack.scratch / name
    try:
        cmd = skopeo_copy_cmd(bench.stack.skopeo, system.host(replica), image.reference, dest)
        seconds, (result,) = run_parallel([cmd], bench.params.client_timeout, env=bench.stack.skopeo.env)
        if result.returncode != 0:
            raise RuntimeError(
                f"skopeo copy {image.reference} from {system.key} failed: {result.stderr.strip()[-500:]}"
            )
        return seconds
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def warm_up(bench: Bench, system: System, image: ImageRef) -> None:
    """Pull an image once through each replica so it is cached everywhere (not timed)."""
    for replica in range(len(system.hosts)):
        _skopeo_once(bench, system, image, f"warmup-{system.key}", replica)


def cold_then_warm_pull(bench: Bench, system: System, image: ImageRef) -> dict:
    """skopeo copy of a never-pulled multi-layer image, then the same again (from the next
    replica, when there are several: what one replica fetched, the other serves)."""
    mark = bench.stack.upstream.log_mark()
    cold = _skopeo_once(bench, system, image, f"cold-{system.key}", 0)
    gets = blob_gets(bench, mark, [b.digest for b in image.blobs])
    warm = _skopeo_once(bench, system, image, f"warm-{system.key}", 1)
    return {"cold_s": cold, "warm_s": warm, "gets_per_blob": gets}


def concurrent_cold_pulls(bench: Bench, system: System, image: ImageRef) -> dict:
    """N simultaneous skopeo copies of one never-pulled image, spread over the replicas."""
    n = bench.params.concurrent_pulls
    dests = [bench.stack.scratch / f"crowd-{system.key}-{i}" for i in range(n)]
    mark = bench.stack.upstream.log_mark()
    try:
        with PeakMemory(system.pids()) as mem:
            seconds, results = skopeo_pulls(
                bench.stack.skopeo, system.hosts, image.reference, dests, bench.params.client_timeout
            )
    finally:
        for d in dests:
            shutil.rmtree(d, ignore_errors=True)
    gets = blob_gets(bench, mark, [b.digest for b in image.blobs])
    failed = [r.stderr.strip()[-300:] for r in results if r.returncode != 0]
    return {
        "seconds": seconds,
        "gets_per_blob": gets,
        "clients": n,
        "failed_clients": len(failed),
        "failures": failed[:3],
        "peak_rss_mib": mem.peak_rss / MiB,
        "peak_pss_mib": mem.peak_pss / MiB,
    }


def blob_throughput(bench: Bench, system: System, clients: int) -> dict:
    """`clients` curl processes each downloading the whole cached large blob, once (following
    a redirect to the object store), spread over the replicas."""
    image = bench.workload.large
    blob = image.largest
    urls = [f"{system.url(i)}/v2/{image.repository}/blobs/{blob.digest}" for i in range(clients)]
    seconds, sizes, errors = curl_downloads(urls, bench.params.client_timeout)
    short = sum(1 for s in sizes if s != blob.size)
    return {
        "mib_per_s": sum(sizes) / MiB / seconds,
        "seconds": seconds,
        "clients": clients,
        "incomplete": short,
        "errors": errors[:3],
    }


def manifest_load(bench: Bench, system: System, by: str) -> dict:
    """Warm manifest GETs for `manifest_seconds`, by digest or by tag; counts what reached the upstream."""
    image = bench.workload.manifest
    ref = image.digest if by == "digest" else image.tag
    urls = [f"{system.url(i)}/v2/{image.repository}/manifests/{ref}" for i in range(len(system.hosts))]
    headers = {"Accept": MANIFEST_ACCEPT}
    p = bench.params
    # A short unmeasured burst first, so connection set-up and first-hit paths are out of the figure.
    http_load(p.loadgen, urls, headers, min(2.0, max(1.0, p.manifest_seconds / 5)), p.manifest_connections)
    upstream = bench.stack.upstream
    mark, tokens = upstream.log_mark(), upstream.token_server.request_count
    result = http_load(p.loadgen, urls, headers, p.manifest_seconds, p.manifest_connections)
    reached = len(upstream.requests_log(mark)) + upstream.token_server.request_count - tokens
    return {
        "rps": result.rps,
        "requests": result.requests,
        "errors": result.errors,
        "seconds": result.seconds,
        "upstream_requests": reached,
    }


def tag_pulls(bench: Bench, system: System) -> dict:
    """`tag_pulls` sequential pulls (ping, manifest by tag, blobs) of an image first pulled just before."""
    image = bench.workload.ttl[system.key]
    upstream = bench.stack.upstream
    session = new_session()
    python_pull(session, system.url(), image)  # the first pull fills the cache and validates the tag
    mark, tokens = upstream.log_mark(), upstream.token_server.request_count
    start = time.monotonic()
    for _ in range(bench.params.tag_pulls):
        python_pull(session, system.url(), image)
    elapsed = time.monotonic() - start
    log = upstream.requests_log(mark)
    token_requests = upstream.token_server.request_count - tokens
    by_kind = Counter(f"{r.method} {r.status}" for r in log)
    return {
        "upstream_requests": len(log) + token_requests,
        "registry_requests": dict(by_kind),
        "token_requests": token_requests,
        "pulls": bench.params.tag_pulls,
        "seconds": elapsed,
        "within_mirror_ttl": elapsed < bench.stack.mirror_tag_ttl,
    }
