"""What the pull path records: hits, misses, stale serves, errors, bytes and pulls, buffered in
memory, written by a flush, and never a reason for a pull to fail."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
import pytest

from dashboard import stats
from dashboard import store as stats_store
from dashboard.figures import Totals
from dashboard.models import HourlyStat, TotalStat, UpstreamCalls, UpstreamEvent
from registry import memory
from registry.models import Tag

# Blob fills record from their own thread: real transactions.
pytestmark = pytest.mark.django_db(transaction=True)

MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def counters(**where) -> Totals:
    rows = HourlyStat.objects.filter(**where).values()
    totals = Totals()
    for row in rows:
        totals.add(Totals.of(row))
    return totals


def get(client, path: str, method: str = "GET", **headers):
    response = client.generic(method, path, HTTP_ACCEPT=MANIFEST_ACCEPT, **headers)
    if response.streaming:
        body = b"".join(response.streaming_content)
        response.close()
        return response, body
    return response, response.content


def test_a_sequence_of_pulls_is_counted_exactly(client, hub, images, upstream):
    small = images.small
    config, layer = small.config, small.layers[0]
    base = "/v2/library/small"
    manifest_size = len(small.manifest)

    assert get(client, f"{base}/manifests/1")[0].status_code == 200  # miss
    assert get(client, f"{base}/manifests/1")[0].status_code == 200  # hit
    assert get(client, f"{base}/blobs/{config.digest}")[1] == config.data  # miss, streamed
    assert get(client, f"{base}/blobs/{config.digest}")[1] == config.data  # hit
    assert get(client, f"{base}/blobs/{layer.digest}", "HEAD")[0].status_code == 200  # miss: asked upstream
    assert get(client, f"{base}/blobs/{layer.digest}", HTTP_RANGE="bytes=0-99")[1] == layer.data  # miss: whole blob
    ranged = get(client, f"{base}/blobs/{layer.digest}", HTTP_RANGE="bytes=0-99")
    assert (ranged[0].status_code, ranged[1]) == (206, layer.data[:100])  # hit
    assert get(client, f"{base}/manifests/no-such-tag")[0].status_code == 404  # error
    assert get(client, f"{base}/manifests/{small.digest}", "HEAD")[0].status_code == 200  # hit, no body

    assert not HourlyStat.objects.exists(), "nothing written before a flush"
    stats.flush()

    manifests = counters(kind="manifest", repository="library/small")
    assert (manifests.requests, manifests.hits, manifests.misses, manifests.stale, manifests.errors) == (4, 2, 1, 0, 1)
    assert manifests.pulls == 2, "manifest requests by tag that were answered"
    assert (manifests.bytes_served, manifests.bytes_from_cache, manifests.bytes_from_upstream) == (
        2 * manifest_size,
        manifest_size,
        manifest_size,
    )
    blobs = counters(kind="blob", repository="library/small")
    assert (blobs.requests, blobs.hits, blobs.misses, blobs.errors, blobs.pulls) == (5, 2, 3, 0, 0)
    assert blobs.bytes_served == 2 * config.size + layer.size + 100
    assert blobs.bytes_from_cache == config.size + 100
    assert blobs.bytes_from_upstream == config.size + layer.size
    row = HourlyStat.objects.filter(kind="blob").get()
    assert (row.upstream, row.account) == (hub.name, upstream.username)
    assert TotalStat.objects.get(upstream=hub.name, kind="blob").requests == 5

    calls = dict(UpstreamCalls.objects.filter(upstream=hub.name).values_list("status", "count"))
    assert calls.get("200", 0) >= 4 and calls.get("404") == 1, calls

    stats.flush()
    assert counters(kind="blob").requests == 5, "a second flush adds nothing twice"


def test_hits_from_object_storage_are_counted_as_hits(client, hub, images, s3_server, settings):
    s3_server.configure(settings, s3_server.create_bucket("stats"), MIRROR_S3_SERVE="redirect")
    layer = images.small.layers[0]
    url = f"/v2/library/small/blobs/{layer.digest}"
    assert get(client, url)[1] == layer.data  # miss, streamed from the fill
    assert get(client, url)[0].status_code == 307  # hit: the bucket sends the bytes
    assert get(client, url, HTTP_RANGE="bytes=0-99")[0].status_code == 307
    settings.MIRROR_S3_SERVE = "stream"
    assert get(client, url)[1] == layer.data  # hit, sent by the mirror from the bucket
    stats.flush()
    blobs = counters(kind="blob", repository="library/small")
    assert (blobs.requests, blobs.hits, blobs.misses, blobs.errors) == (4, 3, 1, 0)
    assert blobs.bytes_from_cache == 2 * layer.size + 100
    assert blobs.bytes_from_upstream == layer.size


def test_pulls_make_no_statistics_writes_until_the_flush(client, hub, images):
    get(client, "/v2/library/small/manifests/1")  # cached, and remembered
    stats.flush()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert get(client, "/v2/library/small/manifests/1")[0].status_code == 200
    assert not [q for q in queries.captured_queries if "dashboard_" in q["sql"]]
    assert counters().requests == 1
    stats.flush()
    assert counters().requests == 6 and counters().hits == 5


def test_stale_serves_are_counted_as_such(client, hub, images, upstream, settings):
    settings.MIRROR_TAG_TTL = 0  # every pull of the tag revalidates
    get(client, "/v2/library/small/manifests/1")
    upstream.stop()
    try:
        memory.forget_all()
        response, body = get(client, "/v2/library/small/manifests/1")
        assert response.status_code == 200 and "Stale" in response["Warning"]
    finally:
        upstream.start()
    stats.flush()
    totals = counters(kind="manifest")
    assert (totals.requests, totals.misses, totals.stale) == (2, 1, 1)
    assert totals.bytes_from_cache == len(body)
    events = list(UpstreamEvent.objects.values_list("kind", "message"))
    assert events and all(kind == "upstream_error" for kind, _ in events), events
    assert UpstreamCalls.objects.filter(status="error").exists(), "the unanswered request is counted"


def test_a_failing_recorder_never_fails_a_pull(client, hub, images, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("statistics are broken")

    monkeypatch.setattr("dashboard.batch.Batch.count", broken)
    monkeypatch.setattr("dashboard.stats.account_in_use", broken)
    response, _ = get(client, "/v2/library/small/manifests/1")
    assert response.status_code == 200
    layer = images.small.layers[0]
    assert get(client, f"/v2/library/small/blobs/{layer.digest}")[1] == layer.data


def test_a_database_failure_keeps_the_figures_for_the_next_flush(client, hub, images, monkeypatch):
    get(client, "/v2/library/small/manifests/1")
    real_write = stats_store.write

    def failing(batch):
        raise DatabaseError("database is locked")

    monkeypatch.setattr(stats_store, "write", failing)
    stats.flush()  # logged, not raised
    assert not HourlyStat.objects.exists()
    monkeypatch.setattr(stats_store, "write", real_write)
    get(client, "/v2/library/small/manifests/1")
    stats.flush()
    assert counters().requests == 2, "the failed batch went out with the next one"


def test_without_redis_the_flush_writes_the_database(client, hub, images, settings):
    settings.MIRROR_STATS_REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    get(client, "/v2/library/small/manifests/1")
    stats.flush()
    assert counters().requests == 1


def test_prefetch_downloads_count_as_bytes_from_upstream_not_as_requests(hub, images):
    from registry.jobs import prefetch
    from registry.jobs.imageref import parse_image

    job = prefetch.create_job(parse_image("library/small:1"))
    assert prefetch.run(job.pk).status == "succeeded"
    stats.flush()
    totals = counters(repository="library/small")
    assert totals.requests == 0
    assert (
        totals.bytes_from_upstream
        == len(images.small.manifest) + images.small.config.size + images.small.layers[0].size
    )
    assert Tag.objects.filter(name="1").exists()
