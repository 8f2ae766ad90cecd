"""The audit log on the pull path: one record per manifest request, buffered in memory,
written by a flush in one batch, and never a reason for a pull to fail."""

from __future__ import annotations

import base64
from datetime import timedelta
import logging

from django.contrib.auth.models import User
from django.db import DatabaseError, connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
import pytest

from audit import recorder, retention, tasks
from audit.models import PullRecord
from mirrorsite import urls
from registry import flushing, oci
from registry.api.responses import registry_endpoint

# Manifest misses fill from the request's thread; real transactions keep them visible.
pytestmark = pytest.mark.django_db(transaction=True)

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def pull(client, path: str, method: str = "GET", **headers):
    return client.generic(method, path, HTTP_ACCEPT=ACCEPT, **headers)


def records() -> list[PullRecord]:
    return list(PullRecord.objects.order_by("id"))


def test_each_manifest_request_is_recorded_with_its_outcome(client, hub, images):
    small = images.small
    assert pull(client, "/v2/library/small/manifests/1", HTTP_USER_AGENT="skopeo/1.9").status_code == 200  # miss
    assert pull(client, "/v2/small/manifests/1").status_code == 200  # hit (library/ added)
    assert pull(client, f"/v2/library/small/manifests/{small.digest}", "HEAD").status_code == 200  # hit
    assert pull(client, "/v2/library/small/manifests/no-such-tag").status_code == 404
    assert pull(client, "/v2/Bad_Name/manifests/1").status_code == 400
    assert pull(client, f"/v2/library/small/blobs/{small.config.digest}").status_code == 200  # not recorded

    assert not PullRecord.objects.exists(), "nothing written before a flush"
    assert recorder.flush() == 5

    rows = records()
    assert [(r.method, r.repository, r.reference, r.outcome, r.status) for r in rows] == [
        ("GET", "library/small", "1", "miss", 200),
        ("GET", "library/small", "1", "hit", 200),
        ("HEAD", "library/small", small.digest, "hit", 200),
        ("GET", "library/small", "no-such-tag", "not_found", 404),
        ("GET", "Bad_Name", "1", "error", 400),
    ]
    assert [r.digest for r in rows] == [small.digest] * 3 + ["", ""]
    assert {r.upstream for r in rows[:4]} == {hub.name}
    assert rows[4].upstream == "", "rejected before any upstream was chosen"
    assert {r.client_address for r in rows} == {"127.0.0.1"}
    assert rows[0].user_agent == "skopeo/1.9"
    assert all(r.user_id is None and r.username == "" for r in rows), "no client authentication ran"
    assert recorder.flush() == 0, "a second flush writes nothing twice"


def test_the_client_behind_a_trusted_proxy_is_recorded(client, hub, images, settings):
    settings.MIRROR_TRUSTED_PROXIES = ["127.0.0.1/32"]
    pull(client, "/v2/library/small/manifests/1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    settings.MIRROR_TRUSTED_PROXIES = []
    pull(client, "/v2/library/small/manifests/1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    recorder.flush()
    assert [r.client_address for r in records()] == ["198.51.100.7", "127.0.0.1"]


def test_the_authenticated_user_and_denials_are_recorded(db, hub, images, settings):
    settings.MIRROR_AUTH = True  # the mirror's client authentication names the user
    user = User.objects.create_user("ci-runner", password="pw")

    @recorder.recorded
    @registry_endpoint
    def denying_view(request, name: str, reference: str):
        raise oci.Denied("not for you")

    @recorder.recorded
    @registry_endpoint
    def challenging_view(request, name: str, reference: str):
        raise oci.Unauthorized("log in first")

    factory = RequestFactory()
    allowed = factory.get(
        "/v2/library/small/manifests/1",
        HTTP_ACCEPT=ACCEPT,
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"ci-runner:pw").decode(),
    )
    denied = factory.get("/v2/library/private/manifests/2", REMOTE_ADDR="192.0.2.9")
    denied.registry_user = user
    unknown = factory.get("/v2/library/private/manifests/2", REMOTE_ADDR="192.0.2.10")
    assert urls.manifest_view(allowed, name="library/small", reference="1").status_code == 200
    assert denying_view(denied, name="library/private", reference="2").status_code == 403
    assert challenging_view(unknown, name="library/private", reference="2").status_code == 401
    recorder.flush()
    rows = records()
    assert [(r.user_id, r.username, r.outcome, r.status) for r in rows][1:] == [
        (user.pk, "ci-runner", "denied", 403),
        (None, "", "denied", 401),
    ]
    assert rows[0].username == "ci-runner" and rows[0].user_id == user.pk
    assert [r.client_address for r in rows[1:]] == ["192.0.2.9", "192.0.2.10"]

    user.delete()
    assert PullRecord.objects.filter(username="ci-runner", user=None).count() == 2, "the name outlives the account"


def test_pulls_make_no_audit_writes_until_the_flush(client, hub, images):
    pull(client, "/v2/library/small/manifests/1")  # cached and remembered
    recorder.flush()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert pull(client, "/v2/library/small/manifests/1").status_code == 200
    assert not [q for q in queries.captured_queries if "audit_" in q["sql"]]
    with CaptureQueriesContext(connection) as queries:
        assert recorder.flush() == 5
    assert len([q for q in queries.captured_queries if "INSERT" in q["sql"]]) == 1, "one batch"


def test_a_failed_flush_keeps_the_records_for_the_next(client, hub, images, monkeypatch, caplog):
    pull(client, "/v2/library/small/manifests/1")
    pull(client, "/v2/library/small/manifests/1")

    def broken(*args, **kwargs):
        raise DatabaseError("database is down")

    monkeypatch.setattr(PullRecord.objects, "bulk_create", broken)
    with caplog.at_level(logging.WARNING, logger="audit.recorder"):
        assert recorder.flush() == 0
    assert "keeping them for the next flush" in caplog.text
    monkeypatch.undo()
    pull(client, "/v2/library/small/manifests/1")
    assert recorder.flush() == 3
    assert [r.outcome for r in records()] == ["miss", "hit", "hit"], "kept in order, the oldest first"


def test_a_record_that_cannot_be_made_never_fails_the_pull(client, hub, images, monkeypatch, caplog):
    def broken(request):
        raise RuntimeError("no address today")

    monkeypatch.setattr(recorder, "client_address", broken)
    with caplog.at_level(logging.ERROR, logger="audit.recorder"):
        response = pull(client, "/v2/library/small/manifests/1")
    assert response.status_code == 200 and response["Docker-Content-Digest"] == images.small.digest
    assert "could not record a pull" in caplog.text
    assert recorder.flush() == 0


def test_a_full_buffer_drops_new_records_and_says_so(client, hub, images, settings, caplog):
    settings.MIRROR_AUDIT_BUFFER_MAX = 2
    for _ in range(4):
        assert pull(client, "/v2/library/small/manifests/1").status_code == 200
    with caplog.at_level(logging.WARNING, logger="audit.recorder"):
        assert recorder.flush() == 2
    assert "2 pull records dropped" in caplog.text


def test_recording_can_be_turned_off(client, hub, images, settings):
    settings.MIRROR_AUDIT_ENABLED = False
    assert pull(client, "/v2/library/small/manifests/1").status_code == 200
    assert recorder.flush() == 0


def test_server_processes_flush_the_audit_log_as_they_exit(client, hub, images):
    pull(client, "/v2/library/small/manifests/1")
    flushing.flush_all()  # what gunicorn's worker_exit and Celery's worker shutdown call
    assert len(records()) == 1


def record_at(days_ago: float) -> PullRecord:
    return PullRecord.objects.create(
        at=timezone.now() - timedelta(days=days_ago),
        method="GET",
        repository="library/x",
        reference="1",
        outcome="hit",
        status=200,
    )


def test_retention_deletes_what_is_older_than_the_setting(db, settings):
    settings.MIRROR_AUDIT_RETENTION_DAYS = 30
    old, edge, recent = record_at(400), record_at(30.01), record_at(29.9)
    assert retention.prune() == 2
    assert list(PullRecord.objects.values_list("pk", flat=True)) == [recent.pk]
    assert old.pk and edge.pk


def test_retention_zero_keeps_everything(db, settings):
    settings.MIRROR_AUDIT_RETENTION_DAYS = 0
    record_at(10_000)
    assert retention.prune() == 0
    assert PullRecord.objects.count() == 1


def test_the_scheduled_task_prunes(db, settings):
    settings.MIRROR_AUDIT_RETENTION_DAYS = 1
    record_at(2)
    record_at(0)
    assert tasks.prune_audit_log.apply().get() == "deleted 1 audit records past retention"
    assert "audit.prune" in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
