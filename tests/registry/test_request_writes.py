"""A request never writes the database for what is buffered (pull times, tag pull counts,
account use), whatever the flush interval: only the flush thread or the exit flush does."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
import pytest

from registry import flushing
from registry.models import Blob, Tag, TagPullCount, UpstreamAccount
from registry.proxy import pulltimes
from registry.upstreams import usage
from tests.dashboard.conftest import hub, store  # noqa: F401 (the mirror of the session's upstream)

# Manifest misses fill from the request's thread; real transactions keep them visible.
pytestmark = pytest.mark.django_db(transaction=True)

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
BUFFERED = ("last_pulled_at", "registry_tagpullcount", "requests_made", "pulls_made")


@pytest.fixture(autouse=True)
def empty_buffers():
    """Each test sees only what it recorded."""
    for buffer in (pulltimes._buffer, usage._buffer):
        buffer.take()
    yield
    for buffer in (pulltimes._buffer, usage._buffer):
        buffer.take()


def writes_of_buffered_figures(queries: CaptureQueriesContext) -> list[str]:
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "INSERT"))]
    return [sql for sql in writes if any(name in sql for name in BUFFERED)]


def test_a_cached_pull_writes_no_pull_time_nor_account_use(client, hub, images, settings):  # noqa: F811
    small = images.small
    layer = small.layers[0]
    settings.MIRROR_TAG_TTL = 0  # each pull of the tag is revalidated upstream: a request the account makes
    assert client.get("/v2/library/small/manifests/1", HTTP_ACCEPT=ACCEPT).status_code == 200  # the miss caches it
    assert b"".join(client.get(f"/v2/library/small/blobs/{layer.digest}").streaming_content) == layer.data
    flushing.flush_all()
    (account,) = UpstreamAccount.objects.filter(upstream=hub)
    requests_before = account.requests_made
    TagPullCount.objects.all().delete()
    Tag.objects.update(last_pulled_at=None)
    Blob.objects.update(last_pulled_at=None)

    # Written "at once" used to mean on the request's thread; now it is the flush thread's.
    settings.MIRROR_PULL_TIME_FLUSH_INTERVAL = 0
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/v2/library/small/manifests/1", HTTP_ACCEPT=ACCEPT)
        assert response.status_code == 200 and response["Docker-Content-Digest"] == small.digest
        blob = client.get(f"/v2/library/small/blobs/{layer.digest}")
        assert blob.status_code == 200
        blob.close()
    assert writes_of_buffered_figures(queries) == []
    assert not TagPullCount.objects.exists()

    flushing.flush_all()  # what a server process does as it stops (its thread does it meanwhile)
    assert Tag.objects.get(name="1", repository__name="library/small").last_pulled_at is not None
    assert Blob.objects.get(digest=layer.digest).last_pulled_at is not None
    assert TagPullCount.objects.get().count == 1
    account.refresh_from_db()
    assert account.requests_made > requests_before, "the revalidation was counted for the account"
