"""The REST API: who may read and write, and what each endpoint answers."""

from __future__ import annotations

import pytest

from dashboard import stats
from mirrorsite.celery import app
from registry.models import GcRun, Manifest, Pin, PrefetchJob, Tag
from tests.dashboard.conftest import api_client
from tests.registry.cachestate import cache_image

# Prefetches run their fills in threads: real transactions.
pytestmark = pytest.mark.django_db(transaction=True)

READS = [
    "/api/",
    "/api/stats/summary/",
    "/api/stats/series/",
    "/api/stats/series/?period=daily",
    "/api/stats/top/",
    "/api/cache/",
    "/api/accounts/",
    "/api/repositories/",
    "/api/tags/",
    "/api/prefetch-jobs/",
    "/api/pins/",
    "/api/gc-runs/",
    "/api/upstream-events/",
    "/api/schema/",
    "/api/docs/",
]


@pytest.fixture
def eager(monkeypatch):
    monkeypatch.setattr(app.conf, "task_always_eager", True)  # the worker, in this process


@pytest.mark.django_db
def test_anonymous_and_non_staff_users_get_nothing(hub, outsider):
    strangers = [api_client(outsider), api_client(outsider, token=False)]
    for path in READS:
        anonymous = api_client().get(path)
        assert anonymous.status_code == 401, path
        assert anonymous["WWW-Authenticate"] == "Token"
        for client in strangers:
            assert client.get(path).status_code == 403, path


@pytest.mark.django_db
def test_staff_read_with_a_token_or_their_session(hub, reader):
    for client in (api_client(reader), api_client(reader, token=False)):
        for path in READS:
            assert client.get(path).status_code == 200, path


def test_writes_need_the_permission(hub, reader, outsider, images, eager):
    for user in (reader, outsider):
        client = api_client(user)
        assert client.post("/api/prefetch-jobs/", {"image": "library/small:1"}, format="json").status_code == 403
        assert client.post("/api/pins/", {"image": "library/small:1"}, format="json").status_code == 403
        assert client.post("/api/evictions/", {"images": ["library/small:1"]}, format="json").status_code == 403
    assert not PrefetchJob.objects.exists() and not Pin.objects.exists()


def test_prefetch_jobs_are_queued_and_followed(hub, operator, images, eager):
    client = api_client(operator)
    created = client.post("/api/prefetch-jobs/", {"image": "multi:1", "platforms": ["linux/arm64"]}, format="json")
    assert created.status_code == 201, created.content
    job = created.json()
    assert (job["repository"], job["reference"], job["platforms"], job["requested_by"]) == (
        "library/multi",
        "1",
        ["linux/arm64"],
        "operator",
    )
    followed = client.get(f"/api/prefetch-jobs/{job['id']}/").json()
    assert followed["status"] == "succeeded" and followed["finished"] and followed["progress"] == 1.0
    assert followed["blobs_done"] == followed["blobs_total"] == 2
    assert followed["progress_text"].startswith("2/2 blobs")
    assert "secret" not in str(followed)
    listed = client.get("/api/prefetch-jobs/?status=succeeded").json()
    assert [item["id"] for item in listed["results"]] == [job["id"]]
    bad = client.post("/api/prefetch-jobs/", {"image": "Not Valid", "platforms": ["linux"]}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()) == {"image", "platforms"}


def test_pins_are_added_and_removed(hub, operator, store):
    client = api_client(operator)
    pinned = client.post("/api/pins/", {"image": "postgres:17", "note": "release day"}, format="json")
    assert pinned.status_code == 201, pinned.content
    assert pinned.json() | {"id": 0, "created_at": ""} == {
        "id": 0,
        "upstream": hub.name,
        "repository": "library/postgres",
        "reference": "17",
        "note": "release day",
        "created_by": "operator",
        "created_at": "",
    }
    whole = client.post("/api/pins/", {"image": "nginx", "all_tags": True}, format="json").json()
    assert whole["reference"] == ""
    assert client.delete(f"/api/pins/{pinned.json()['id']}/").status_code == 204
    assert [str(pin) for pin in Pin.objects.all()] == ["library/nginx"]


def test_eviction_evicts_cached_images_but_never_pinned_ones(hub, operator, store):
    doomed = cache_image(store, hub, "library/doomed", "1", [b"x" * 100])
    cache_image(store, hub, "library/kept", "1", [b"y" * 100])
    Pin.objects.create(upstream=hub, repository="library/kept", reference="1")
    client = api_client(operator)
    answer = client.post("/api/evictions/", {"images": ["doomed:1", "kept:1"]}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["gc_run"]["manifests_deleted"] == 1 and body["gc_run"]["trigger"] == "api: operator"
    assert any("pinned" in note for note in body["notes"])
    assert not Manifest.objects.filter(pk=doomed.pk).exists()
    assert Tag.objects.filter(repository__name="library/kept").exists()
    missing = client.post("/api/evictions/", {"images": ["library/never:1"]}, format="json")
    assert missing.status_code == 400 and "not cached" in str(missing.json())
    assert client.get("/api/gc-runs/").json()["count"] == GcRun.objects.count() == 1


def test_statistics_endpoints_answer_the_flushed_figures(client, hub, reader, images):
    layer = images.small.layers[0]
    for _ in range(2):
        response = client.get(f"/v2/library/small/blobs/{layer.digest}")
        b"".join(response.streaming_content)
        response.close()
    stats.flush()
    api = api_client(reader)
    day = api.get("/api/stats/summary/").json()["windows"]["24h"]
    assert (day["requests"], day["hits"], day["misses"]) == (2, 1, 1)
    assert (day["bytes_served"], day["bytes_from_cache"], day["bytes_from_upstream"]) == (
        2 * layer.size,
        layer.size,
        layer.size,
    )
    assert day["hit_rate"] == 0.5 and day["byte_hit_rate"] == 0.5 and day["bandwidth_saved"] == layer.size
    assert api.get("/api/stats/summary/?repository=library/other").json()["windows"]["24h"]["requests"] == 0
    series = api.get("/api/stats/series/?period=hourly&hours=3").json()
    assert len(series["points"]) == 3 and series["points"][-1]["totals"]["requests"] == 2
    assert len(api.get("/api/stats/series/?period=daily&days=7").json()["points"]) == 7
    assert api.get("/api/stats/series/?period=weekly").status_code == 400
    top = api.get("/api/stats/top/").json()
    assert top["by_bandwidth_saved"][0]["repository"] == "library/small"
    cache = api.get("/api/cache/").json()
    assert cache["blobs"] == 1 and cache["bytes"] == layer.size
    repositories = api.get("/api/repositories/?name=library/small").json()["results"]
    assert [r["name"] for r in repositories] == ["library/small"]


def test_accounts_say_which_is_in_use_and_never_carry_a_secret(hub, reader, upstream, images, client):
    client.get("/v2/library/small/manifests/1")
    (account,) = api_client(reader).get("/api/accounts/").json()
    assert (account["username"], account["in_use"], account["upstream"]) == (upstream.username, True, hub.name)
    assert upstream.password not in str(account)
    assert "secret" not in account


def test_the_schema_describes_the_api(hub, reader):
    schema = api_client(reader).get("/api/schema/?format=json").json()
    assert {
        "/api/stats/summary/",
        "/api/prefetch-jobs/",
        "/api/pins/{id}/",
        "/api/evictions/",
        "/api/accounts/",
    } <= set(schema["paths"])
    docs = api_client(reader, token=False).get("/api/docs/").content.decode()
    assert "swagger-ui" in docs and "//cdn" not in docs and "unpkg" not in docs
