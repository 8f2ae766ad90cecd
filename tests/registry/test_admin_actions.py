"""What staff do to the cache from the admin: pin, unpin, evict, prefetch; pins and jobs."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
import pytest

from mirrorsite.celery import app
from registry.models import GcRun, Manifest, Pin, PrefetchJob, Tag, Upstream
from registry.storage.blobstore import BlobStore, FilesystemStore
from tests.registry.cachestate import cache_image

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    return FilesystemStore(tmp_path)


@pytest.fixture
def hub(settings, store, upstream) -> Upstream:
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = upstream.username, upstream.password
    return Upstream.objects.default()


@pytest.fixture
def eager(monkeypatch):
    monkeypatch.setattr(app.conf, "task_always_eager", True)  # the worker, in this process


def act(client, model: str, action: str, pks) -> None:
    response = client.post(f"/admin/registry/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]})
    assert response.status_code == 302, response.content[:500]


def test_pin_and_unpin_tags_and_manifests(admin_client, hub, store):
    tagged = cache_image(store, hub, "library/app", "1", [b"a" * 100])
    by_digest = cache_image(store, hub, "library/app", None, [b"b" * 100])
    tag = Tag.objects.get()
    act(admin_client, "tag", "pin", [tag.pk])
    act(admin_client, "manifest", "pin", [by_digest.pk])
    assert sorted(str(p) for p in Pin.objects.all()) == sorted(["library/app:1", f"library/app@{by_digest.digest}"])
    assert Pin.objects.filter(created_by="admin").count() == 2
    listing = admin_client.get("/admin/registry/manifest/").content.decode()
    assert listing.count('alt="True"') == 1 and listing.count('alt="False"') == 1  # the pinned column
    act(admin_client, "tag", "unpin", [tag.pk])
    assert [str(p) for p in Pin.objects.all()] == [f"library/app@{by_digest.digest}"]
    assert tagged.pk != by_digest.pk


def test_evict_removes_the_image_but_never_a_pinned_one(admin_client, hub, store):
    doomed = cache_image(store, hub, "library/doomed", "1", [b"c" * 100], days_ago=0.01)
    kept = cache_image(store, hub, "library/kept", "1", [b"d" * 100])
    Pin.objects.create(upstream=hub, repository="library/kept", reference="1")
    act(admin_client, "manifest", "evict", [doomed.pk, kept.pk])
    assert list(Manifest.objects.values_list("pk", flat=True)) == [kept.pk]
    run = GcRun.objects.get()
    assert run.trigger == "admin: admin" and run.manifests_deleted == 1
    assert "library/doomed@" in run.evicted[0]["image"]
    assert admin_client.get("/admin/registry/gcrun/").status_code == 200


def test_prefetch_from_a_tag_and_from_the_job_form(admin_client, hub, images, store, eager):
    cache_image(store, hub, "library/small", "1", [b"stale" * 10])  # the tag, as the cache knows it
    act(admin_client, "tag", "prefetch", [Tag.objects.get().pk])
    job = PrefetchJob.objects.get()
    assert (str(job), job.requested_by) == ("library/small:1", "admin")
    response = admin_client.post(
        "/admin/registry/prefetchjob/add/", {"image": "multi:1", "platform_list": "linux/arm64"}
    )
    assert response.status_code == 302, response.content[:1000]
    job = PrefetchJob.objects.get(reference="1", repository="library/multi")
    assert (job.platforms, job.status) == ("linux/arm64", PrefetchJob.Status.SUCCEEDED)
    assert Manifest.objects.filter(digest=images.multi.child("arm64").digest).exists()
    page = admin_client.get("/admin/registry/prefetchjob/").content.decode()
    assert "2/2 blobs" in page
    bad = admin_client.post("/admin/registry/prefetchjob/add/", {"image": "Not Valid", "platform_list": ""})
    assert bad.status_code == 200 and b"invalid repository name" in bad.content
    act(admin_client, "prefetchjob", "run_again", [job.pk])
    assert PrefetchJob.objects.filter(repository="library/multi", platforms="linux/arm64").count() == 2


def test_pins_are_added_and_deleted_in_their_admin(admin_client, hub):
    response = admin_client.post(
        "/admin/registry/pin/add/",
        {"upstream": hub.pk, "repository": "library/postgres", "reference": "17", "note": "rollout"},
    )
    assert response.status_code == 302
    pin = Pin.objects.get()
    assert (str(pin), pin.created_by) == ("library/postgres:17", "admin")
    assert admin_client.post(f"/admin/registry/pin/{pin.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Pin.objects.exists()


def test_staff_without_the_permissions_get_no_actions(client, hub, store):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tag"))
    client.force_login(viewer)
    cache_image(store, hub, "library/app", "1", [b"a" * 100])
    listing = client.get("/admin/registry/tag/").content.decode()
    assert "library/app:1" in listing
    for action in ("pin", "unpin", "evict", "prefetch"):
        assert f'value="{action}"' not in listing
    client.post("/admin/registry/tag/", {"action": "pin", "_selected_action": [str(Tag.objects.get().pk)]})
    assert not Pin.objects.exists()
