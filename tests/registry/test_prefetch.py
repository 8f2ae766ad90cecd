"""Prefetch, called directly, against the real upstream (and a scripted one for misbehaviour)."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
import pytest

from mirrorsite.celery import app
from registry import oci
from registry.jobs import prefetch, tasks
from registry.jobs.imageref import parse_image, parse_platforms
from registry.models import Manifest, PrefetchJob, Tag, TagPullCount, Upstream, UpstreamAccount
from registry.proxy import pulltimes
from registry.storage.blobstore import BlobStore, FilesystemStore
from tests.registry.cachestate import count_manifest_parses
from tests.support.fake_registry import ANY_REPOSITORY, Behaviour, FailFirst, FakeRegistry, Quota, RateLimit
from tests.support.images import PushedImage, build_image, push_index

# Fills write from a background thread: real transactions, not a rolled-back one.
pytestmark = pytest.mark.django_db(transaction=True)
KB = 1024


@pytest.fixture(scope="module")
def warm(upstream):
    """A multi-layer image for three platforms, for this module only."""
    return push_index(
        upstream,
        "library/warm",
        "1",
        platforms=[("linux", "amd64"), ("linux", "arm64"), ("linux", "arm", "v7")],
        layer_sizes=[120 * KB, 60 * KB, 30 * KB],
        seed=7001,
    )


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_TAG_TTL = 3600
    settings.MIRROR_PREFETCH_BACKOFF = 0  # retries without waiting,
    settings.MIRROR_PREFETCH_BACKOFF_MAX = 0  # even for a 429's Retry-After
    settings.MIRROR_PREFETCH_ATTEMPTS = 3
    settings.MIRROR_PREFETCH_RATELIMIT_RESERVE = 10
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 1
    return FilesystemStore(tmp_path)


@pytest.fixture
def mirror_of(settings, store):
    def make(url: str, username: str = "", password: str = "") -> Upstream:
        settings.REGISTRY_PROXY_REMOTEURL = url
        settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = username, password
        return Upstream.objects.default()

    return make


@pytest.fixture
def hub(mirror_of, upstream) -> Upstream:
    return mirror_of(upstream.url, upstream.username, upstream.password)


def run(text: str, platforms: str = "", upstream: Upstream | None = None, on_progress=None) -> PrefetchJob:
    job = prefetch.create_job(parse_image(text, upstream), parse_platforms([platforms]), requested_by="test")
    return prefetch.run(job.pk, on_progress=on_progress)


def stored(store: BlobStore, blobs) -> set[str]:
    return {b.digest for b in blobs if store.size(oci.parse_digest(b.digest)) is not None}


def test_prefetch_caches_the_index_every_platform_and_every_blob(hub, upstream, warm, store):
    progress: list[tuple[int, int]] = []
    mark = upstream.log_mark()
    job = run("warm:1", on_progress=lambda j: progress.append((j.bytes_done, j.blobs_done)))
    assert job.status == PrefetchJob.Status.SUCCEEDED, job.message
    assert job.digest == warm.digest
    assert set(Manifest.objects.values_list("digest", flat=True)) == {warm.digest} | {c.digest for c in warm.children}
    assert stored(store, warm.blobs) == {b.digest for b in warm.blobs}
    total = sum(b.size for b in warm.blobs)
    assert (job.blobs_total, job.blobs_done) == (len(warm.blobs), len(warm.blobs))
    assert job.bytes_total == job.bytes_done == job.bytes_downloaded == total
    assert job.manifests_fetched == 4
    assert job.started_at <= job.finished_at and job.requested_by == "test"
    assert progress == sorted(progress) and progress[-1] == (total, len(warm.blobs))
    assert len({done for done, _ in progress}) > len(warm.blobs), "progress is reported while bytes flow"
    for blob in warm.blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 1

    again_mark = upstream.log_mark()
    again = run("library/warm:1")
    assert again.status == PrefetchJob.Status.SUCCEEDED
    assert (again.bytes_done, again.bytes_downloaded, again.manifests_fetched) == (total, 0, 0)
    assert [r for r in upstream.requests_log(since=again_mark) if r.method == "GET"] == [], (
        "idempotent: no upstream GET"
    )


def test_platform_filter_fetches_only_the_platforms_asked_for(hub, upstream, warm, store):
    mark = upstream.log_mark()
    job = run("warm:1", platforms="linux/arm64,linux/arm/v7")
    assert job.status == PrefetchJob.Status.SUCCEEDED, job.message
    wanted = [warm.child("arm64"), warm.child("arm")]
    assert set(Manifest.objects.values_list("digest", flat=True)) == {warm.digest} | {c.digest for c in wanted}
    assert stored(store, warm.blobs) == {b.digest for c in wanted for b in c.blobs}
    assert job.blobs_total == sum(len(c.blobs) for c in wanted)
    for blob in warm.child("amd64").blobs:
        assert upstream.blob_gets(blob.digest, since=mark) == 0


def test_a_platform_the_index_lacks_fails_saying_what_it_has(hub, warm, store):
    job = run("warm:1", platforms="linux/s390x")
    assert job.status == PrefetchJob.Status.FAILED
    assert "linux/s390x" in job.message and "linux/amd64" in job.message and "linux/arm/v7" in job.message
    assert job.finished_at is not None


def test_an_unknown_tag_fails_the_job(hub, images, store):
    job = run("small:no-such-tag")
    assert job.status == PrefetchJob.Status.FAILED
    assert job.message.startswith("MANIFEST_UNKNOWN")


def test_prefetch_stops_before_spending_the_last_pulls(hub, upstream, images, store, settings):
    account = UpstreamAccount.objects.get(upstream=hub, username=upstream.username)
    account.ratelimit_limit, account.ratelimit_remaining, account.ratelimit_window = 100, 3, 21600
    account.ratelimit_seen_at = timezone.now()
    account.save()
    mark = upstream.log_mark()
    job = run("small:1")
    assert job.status == PrefetchJob.Status.STOPPED
    assert "3 of 100 pulls left" in job.message and "10 kept for clients" in job.message
    assert upstream.requests_log(since=mark) == []
    # Once the window the count belonged to has passed, the limit no longer holds us back.
    UpstreamAccount.objects.filter(pk=account.pk).update(ratelimit_seen_at=timezone.now() - timedelta(hours=7))
    assert run("small:1").status == PrefetchJob.Status.SUCCEEDED


def serving(image: PushedImage, *behaviours: Behaviour) -> FakeRegistry:
    """A registry serving `image` under any name, misbehaving as `behaviours` say."""
    registry = FakeRegistry(*behaviours)
    registry.serve(ANY_REPOSITORY, image)
    return registry


def test_prefetch_stops_cleanly_when_the_limit_runs_low_midway(mirror_of, store):
    image = build_image("library/limited", "1", layer_sizes=[10 * KB, 10 * KB], seed=7002)
    with serving(image, RateLimit({None: Quota(reported=100, used=100 - 11)})) as registry:
        job = run("limited:1", upstream=mirror_of(registry.url))
        assert job.status == PrefetchJob.Status.STOPPED
        assert "10 of 100 pulls left" in job.message
        assert len(registry.seen(method="GET", kind="manifests", status=200)) == 1
        assert len(registry.seen(method="GET", kind="blobs", status=200)) == 0
    assert job.blobs_total == 3 and job.blobs_done == 0


def test_transient_upstream_errors_are_retried(mirror_of, store):
    image = build_image("library/flaky", "1", layer_sizes=[10 * KB], seed=7003)
    with serving(image, FailFirst(2, status=503)) as registry:
        job = run("flaky:1", upstream=mirror_of(registry.url))
    assert job.status == PrefetchJob.Status.SUCCEEDED, job.message
    assert stored(store, image.blobs) == {b.digest for b in image.blobs}
    assert [(e["what"], e["retried"]) for e in job.errors] == [("manifest 1", True), ("manifest 1", True)]
    assert "UNAVAILABLE" in job.errors[0]["error"]


def test_a_persistent_429_stops_the_job_after_the_retries(mirror_of, store, settings):
    image = build_image("library/busy", "1", layer_sizes=[10 * KB], seed=7004)
    with serving(image, FailFirst(100, status=429)) as registry:
        job = run("busy:1", upstream=mirror_of(registry.url))
        # After a 429 the account is left aside (MIRROR_ACCOUNT_COOLDOWN): the retries wait
        # for it without asking the upstream again.
        assert len(registry.requests) == 1
    assert job.status == PrefetchJob.Status.STOPPED
    assert "rate limit" in job.message
    assert len(job.errors) == settings.MIRROR_PREFETCH_ATTEMPTS - 1


def test_an_unreachable_upstream_fails_the_job_after_the_retries(mirror_of, store, settings):
    job = run("anything:1", upstream=mirror_of("http://127.0.0.1:9"))
    assert job.status == PrefetchJob.Status.FAILED
    assert job.message.startswith("UNAVAILABLE")
    assert len(job.errors) == settings.MIRROR_PREFETCH_ATTEMPTS - 1


def test_prefetch_is_not_counted_as_a_client_pull(hub, images, store, settings):
    settings.MIRROR_PULL_TIME_FLUSH_INTERVAL = 3600
    pulltimes.flush()
    run("small:1")
    pulltimes.flush()
    tag = Tag.objects.get()
    assert tag.last_pulled_at is not None, "it was used: garbage collection sees it"
    assert not TagPullCount.objects.exists(), "but it is not popular for it"
    from registry.proxy import manifests
    from registry.upstreams.routing import Route

    manifests.get_manifest(Route(hub, "small"), oci.parse_reference("1"))
    pulltimes.flush()
    assert TagPullCount.objects.get().count == 1


def test_enqueued_job_is_run_by_the_task(hub, images, store, monkeypatch):
    monkeypatch.setattr(app.conf, "task_always_eager", True)
    with transaction.atomic():
        job = tasks.enqueue_prefetch(parse_image("small:1"), requested_by="staff")
        assert PrefetchJob.objects.get(pk=job.pk).status == PrefetchJob.Status.QUEUED, "sent only once committed"
    job.refresh_from_db()
    assert job.status == PrefetchJob.Status.SUCCEEDED
    assert tasks.prefetch(job.pk) == PrefetchJob.Status.SUCCEEDED, "a job delivered twice is not run twice"


def test_a_job_the_queue_cannot_take_says_so(hub, store, monkeypatch):
    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(tasks.prefetch, "delay", broker_down)
    job = tasks.enqueue_prefetch(parse_image("small:1"))
    job.refresh_from_db()
    assert job.status == PrefetchJob.Status.FAILED
    assert "could not reach the task queue" in job.message


def test_a_job_whose_worker_was_lost_is_sent_again_and_resumes(hub, images, store, monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(tasks.prefetch, "delay", lambda job_id: sent.append(job_id))
    lost = prefetch.create_job(parse_image("small:1"))
    waiting = prefetch.create_job(parse_image("small:1"))
    PrefetchJob.objects.filter(pk=lost.pk).update(
        status=PrefetchJob.Status.RUNNING, updated_at=timezone.now() - timedelta(hours=1)
    )
    done = prefetch.create_job(parse_image("small:1"))
    PrefetchJob.objects.filter(pk=done.pk).update(
        status=PrefetchJob.Status.SUCCEEDED, updated_at=timezone.now() - timedelta(hours=1)
    )
    assert tasks.resume_stalled_prefetches() == [lost.pk]
    assert sent == [lost.pk], "a job waiting its turn, or finished, is left alone"
    assert tasks.resume_stalled_prefetches() == [], "sent once"
    assert tasks.prefetch(lost.pk) == PrefetchJob.Status.SUCCEEDED
    assert waiting.pk not in sent


def test_a_prefetch_parses_each_manifest_once(hub, warm, store, monkeypatch):
    parsed = count_manifest_parses(monkeypatch)
    job = run("warm:1", "linux/arm64")
    assert job.status == PrefetchJob.Status.SUCCEEDED
    assert sorted(parsed) == sorted([warm.manifest, warm.child("arm64").manifest]), "the index, then the image"
