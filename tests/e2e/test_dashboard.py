"""Statistics of a real mirror process: a known sequence of cold and warm pulls gives exactly
the expected figures in /api/ and /metrics, the figures survive a restart, and a statistics
backend that is down fails no pull (and loses no figure)."""

from __future__ import annotations

import time

import pytest

from tests.support.dashboard import DashboardApi, create_staff, pull_with_requests, wait_for
from tests.support.images import PushedImage, push_image
from tests.support.mirror import MirrorProcess
from tests.support.upstream_registry import free_port

KB = 1024
FLUSH = "1"  # seconds: the figures land quickly


@pytest.fixture(scope="module")
def counted(upstream) -> PushedImage:
    return push_image(upstream, "library/counted", "1", layer_sizes=[300 * KB, 200 * KB], seed=7301)


def start_mirror(path, upstream, **env: str) -> MirrorProcess:
    # Without Redis the web processes write their statistics themselves: no worker needed.
    return MirrorProcess(
        path,
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_STATS_FLUSH_INTERVAL=FLUSH,
        MIRROR_TAG_TTL="3600",
        MIRROR_EMBEDDED_WORKERS="false",
        **env,
    ).start()


def test_exact_figures_that_survive_a_restart_and_a_statistics_backend_down(
    processes, upstream, counted, skopeo, tmp_path
):
    mirror = start_mirror(tmp_path / "data", upstream)
    processes.append(mirror)
    token = create_staff(mirror)
    api = DashboardApi(mirror, token)
    manifest = len(counted.manifest)
    blobs = counted.config.size + sum(layer.size for layer in counted.layers)

    pull_with_requests(mirror, counted)  # cold: 4 misses
    pull_with_requests(mirror, counted)  # warm: 4 hits
    expected = {
        "requests": 8,
        "hits": 4,
        "misses": 4,
        "stale": 0,
        "errors": 0,
        "pulls": 2,
        "bytes_served": 2 * (manifest + blobs),
        "bytes_from_cache": manifest + blobs,
        "bytes_from_upstream": manifest + blobs,
        "hit_rate": 0.5,
        "byte_hit_rate": 0.5,
        "bandwidth_saved": manifest + blobs,
    }
    day = wait_for(lambda: api.day(repository="library/counted"), lambda figures: figures["requests"] >= 8)
    assert day == expected
    blob_figures = api.day(repository="library/counted", kind="blob")
    assert (blob_figures["requests"], blob_figures["misses"], blob_figures["bytes_from_upstream"]) == (6, 3, blobs)

    metrics = api.metrics()  # a fresh mirror: this was all its traffic
    upstream_name = api.get("/api/accounts/")[0]["upstream"]
    for kind, size, count in (("manifest", manifest, 2), ("blob", blobs, 6)):
        labels = (("kind", kind), ("upstream", upstream_name))
        assert metrics[("mirrorsite_requests_total", labels)] == count
        assert metrics[("mirrorsite_cache_hits_total", labels)] == count / 2
        assert metrics[("mirrorsite_cache_misses_total", labels)] == count / 2
        assert metrics[("mirrorsite_served_bytes_total", labels)] == 2 * size
        assert metrics[("mirrorsite_served_from_cache_bytes_total", labels)] == size
        assert metrics[("mirrorsite_upstream_fetched_bytes_total", labels)] == size
    assert metrics[("mirrorsite_cache_bytes", ())] == blobs

    # A warm pull by a real client adds hits and nothing from the upstream.
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{mirror.host}/library/counted:1",
        f"dir:{tmp_path / 'warm'}",
    )
    after = wait_for(lambda: api.day(repository="library/counted"), lambda figures: figures["hits"] >= 8)
    assert after["hits"] >= 8 and after["requests"] == after["hits"] + 4
    assert (after["misses"], after["errors"], after["bytes_from_upstream"]) == (4, 0, manifest + blobs)

    # One more hit, then a restart at once: what the server held is written as it stops.
    pull_with_requests(mirror, counted)
    mirror.stop()
    assert upstream.password not in mirror.log_path.read_text(errors="replace")

    # Restarted with a statistics backend that is down (Redis nobody listens on).
    dead = f"redis://127.0.0.1:{free_port()}/0"
    again = start_mirror(mirror.data_dir, upstream, MIRROR_STATS_REDIS_URL=dead)
    processes.append(again)
    api = DashboardApi(again, token)
    restarted = api.day(repository="library/counted")
    assert restarted["requests"] == after["requests"] + 4 and restarted["hits"] == after["hits"] + 4
    assert restarted["bytes_from_upstream"] == manifest + blobs
    assert api.metrics()[("mirrorsite_requests_total", (("kind", "blob"), ("upstream", upstream_name)))] >= 9
    time.sleep(2.5)  # two more flush intervals: nothing is counted twice
    assert api.day(repository="library/counted") == restarted

    # Pulls go on, and are counted all the same (written to the database instead).
    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{again.host}/library/counted:1",
        f"dir:{tmp_path / 'backend-down'}",
    )
    pull_with_requests(again, counted)
    final = wait_for(lambda: api.day(repository="library/counted"), lambda f: f["hits"] >= restarted["hits"] + 8)
    assert final["hits"] >= restarted["hits"] + 8 and final["misses"] == 4 and final["errors"] == 0
    assert "could not send statistics to Redis" in again.log_path.read_text(errors="replace")
