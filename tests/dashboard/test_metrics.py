"""`/metrics`: Prometheus text with the flushed counters, upstream calls, the cache and GC."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
import pytest

from dashboard import stats
from registry.models import GcRun, UpstreamAccount

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_count_requests_bytes_upstream_calls_and_the_cache(client, hub, images, upstream):
    layer = images.small.layers[0]
    for _ in range(2):
        response = client.get(f"/v2/library/small/blobs/{layer.digest}")
        b"".join(response.streaming_content)
        response.close()
    UpstreamAccount.objects.filter(upstream=hub).update(ratelimit_limit=100, ratelimit_remaining=76)
    GcRun.objects.create(
        started_at="2026-11-29T00:00Z",
        finished_at="2026-11-29T00:01Z",
        trigger="test",
        manifests_deleted=3,
        bytes_freed=1000,
    )
    stats.flush()

    metrics = scrape(client)
    blob = (("kind", "blob"), ("upstream", hub.name))
    assert metrics[("mirrorsite_requests_total", blob)] == 2
    assert metrics[("mirrorsite_cache_hits_total", blob)] == 1
    assert metrics[("mirrorsite_cache_misses_total", blob)] == 1
    assert metrics[("mirrorsite_stale_serves_total", blob)] == 0
    assert metrics[("mirrorsite_served_bytes_total", blob)] == 2 * layer.size
    assert metrics[("mirrorsite_served_from_cache_bytes_total", blob)] == layer.size
    assert metrics[("mirrorsite_upstream_fetched_bytes_total", blob)] == layer.size
    ok = (("status", "200"), ("upstream", hub.name))
    assert metrics[("mirrorsite_upstream_requests_total", ok)] >= 1
    assert (
        metrics[("mirrorsite_upstream_request_duration_seconds_count", ok)]
        == metrics[("mirrorsite_upstream_requests_total", ok)]
    )
    assert metrics[("mirrorsite_upstream_request_duration_seconds_bucket", (("le", "+Inf"), *ok))] >= 1
    account = (("account", upstream.username), ("upstream", hub.name))
    assert metrics[("mirrorsite_upstream_ratelimit_remaining", account)] == 76
    assert metrics[("mirrorsite_upstream_up", (("upstream", hub.name),))] == 1
    assert metrics[("mirrorsite_cache_bytes", ())] == layer.size
    assert metrics[("mirrorsite_cache_blobs", ())] == 1
    assert metrics[("mirrorsite_evicted_manifests_total", ())] == 3
    assert metrics[("mirrorsite_fills_in_progress", ())] == 0


def test_a_metrics_token_keeps_strangers_out(client, hub, settings):
    settings.MIRROR_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert ("mirrorsite_cache_blobs", ()) in scrape(client, HTTP_AUTHORIZATION="Bearer scrape-me")


def test_metrics_are_refused_to_clients_outside_the_monitoring_networks(client, hub, settings):
    settings.MIRROR_METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.8").status_code == 200
    settings.MIRROR_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200
