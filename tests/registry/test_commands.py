"""`manage.py prefetch`, `gc` and `pin`, as staff run them."""

from __future__ import annotations

from io import StringIO

from django.core.management import CommandError, call_command
from django.utils import timezone
import pytest

from mirrorsite.celery import app
from registry import oci
from registry.models import Manifest, Pin, PrefetchJob, Upstream, UpstreamAccount
from registry.storage.blobstore import BlobStore, FilesystemStore
from tests.registry.cachestate import cache_image

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_PREFETCH_BACKOFF = 0
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    return FilesystemStore(tmp_path)


@pytest.fixture
def hub(settings, store, upstream) -> Upstream:
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = upstream.username, upstream.password
    return Upstream.objects.default()


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_prefetch_wait_runs_here_with_a_progress_bar(hub, images, store):
    out, err = run("prefetch", "library/multi:1", "--platform", "linux/arm64", "--wait")
    arm = images.multi.child("arm64")
    assert "100%" in err and "blobs 2/2" in err, err
    assert f"succeeded: library/multi:1 ({images.multi.digest}), 2/2 blobs" in out
    assert {b.digest for b in arm.blobs} == {
        b.digest for b in arm.blobs if store.size(oci.parse_digest(b.digest)) is not None
    }
    job = PrefetchJob.objects.get()
    assert (job.platforms, job.status) == ("linux/arm64", PrefetchJob.Status.SUCCEEDED)
    assert "manage.py prefetch" in job.requested_by


def test_prefetch_enqueues_and_follows_the_job(hub, images, store, monkeypatch):
    monkeypatch.setattr(app.conf, "task_always_eager", True)  # the worker, in this process
    out, err = run("prefetch", "small:1")
    job = PrefetchJob.objects.get()
    assert f"queued prefetch job {job.pk} for library/small:1" in out
    assert f"job {job.pk} succeeded" in out and job.status == PrefetchJob.Status.SUCCEEDED


def test_prefetch_detach_only_enqueues(hub, monkeypatch):
    sent = []
    monkeypatch.setattr("registry.jobs.tasks.prefetch.delay", lambda job_id: sent.append(job_id))
    out, _ = run("prefetch", "small:1", "--detach")
    job = PrefetchJob.objects.get()
    assert sent == [job.pk] and job.status == PrefetchJob.Status.QUEUED
    assert out.strip() == f"queued prefetch job {job.pk} for library/small:1"


def test_prefetch_failures_and_stops_exit_non_zero(hub, images, upstream):
    with pytest.raises(CommandError, match="MANIFEST_UNKNOWN") as failed:
        run("prefetch", "small:nope", "--wait")
    assert failed.value.returncode == 1
    UpstreamAccount.objects.filter(username=upstream.username).update(
        ratelimit_remaining=0, ratelimit_limit=100, ratelimit_seen_at=timezone.now()
    )
    with pytest.raises(CommandError, match="rate limit nearly spent") as stopped:
        run("prefetch", "big:1", "--wait")
    assert stopped.value.returncode == 3
    with pytest.raises(CommandError, match="not a platform"):
        run("prefetch", "small:1", "--platform", "amd64")


def test_gc_dry_run_then_real_run(settings, store):
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    hub = Upstream.objects.default()
    old = cache_image(store, hub, "library/old", "1", [b"x" * 5000], days_ago=30)
    out, _ = run("gc", "--dry-run")
    assert f"would evict library/old@{old.digest} (tags: 1): not pulled for 30 days" in out
    assert "would free 5.1 kB" in out and Manifest.objects.exists()
    out, _ = run("gc")
    assert f"evict library/old@{old.digest}" in out
    assert "freed 5.1 kB: 2 blobs, 1 manifests, 1 tags, 1 repositories, 0 temporary files" in out
    assert not Manifest.objects.exists()


def test_pin_unpin_and_list(settings, store):
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    Upstream.objects.default()
    assert run("pin", "postgres:17", "redis", "--note", "release day")[0].splitlines() == [
        "pinned library/postgres:17",
        "pinned library/redis:latest",
    ]
    assert run("pin", "nginx", "--all-tags")[0].strip() == "pinned library/nginx"
    listing = run("pin", "--list")[0]
    assert "library/postgres:17  # release day" in listing and "library/nginx (all tags)" in listing
    assert run("pin", "postgres:17", "--remove")[0].strip() == "unpinned library/postgres:17"
    assert run("pin", "postgres:17", "--remove")[0].strip() == "library/postgres:17 was not pinned"
    assert sorted(str(p) for p in Pin.objects.all()) == ["library/nginx", "library/redis:latest"]
