"""Blob reads in the audit log: recorded only with MIRROR_AUDIT_BLOBS on, as rows of kind blob."""

from __future__ import annotations

import pytest

from audit import recorder
from audit.models import PullRecord

pytestmark = pytest.mark.django_db(transaction=True)


def test_blob_reads_are_not_recorded_by_default(client, hub, images):
    assert client.get(f"/v2/library/small/blobs/{images.small.config.digest}").status_code == 200
    assert client.get("/v2/library/small/manifests/1", HTTP_ACCEPT=images.small.media_type).status_code == 200
    recorder.flush()
    assert list(PullRecord.objects.values_list("kind", flat=True)) == ["manifest"]


def test_blob_reads_are_recorded_when_asked(settings, client, hub, images):
    settings.MIRROR_AUDIT_BLOBS = True
    config = images.small.config.digest
    assert client.get(f"/v2/library/small/blobs/{config}").status_code == 200  # miss
    assert client.head(f"/v2/library/small/blobs/{config}").status_code == 200  # hit
    assert client.get("/v2/library/small/blobs/sha256:nothex").status_code == 400
    recorder.flush()
    rows = [
        (r.kind, r.method, r.repository, r.reference, r.digest, r.outcome, r.status)
        for r in PullRecord.objects.order_by("id")
    ]
    assert rows == [
        ("blob", "GET", "library/small", config, config, "miss", 200),
        ("blob", "HEAD", "library/small", config, config, "hit", 200),
        ("blob", "GET", "library/small", "sha256:nothex", "", "error", 400),
    ]
