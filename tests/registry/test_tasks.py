"""The Celery tasks are thin: each hands its work to a plain function and says how it went."""

from __future__ import annotations

import pytest

from registry.jobs import gc, tasks
from registry.models import GcRun, Manifest, Upstream
from registry.storage.blobstore import FilesystemStore
from tests.registry.cachestate import cache_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def hub(settings, tmp_path) -> Upstream:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    return Upstream.objects.default()


def test_scheduled_garbage_collection(hub, tmp_path):
    cache_image(FilesystemStore(tmp_path), hub, "library/old", "1", [b"x" * 2000], days_ago=30)
    assert tasks.collect_garbage().startswith("freed 2.1 kB")
    assert GcRun.objects.get().trigger == "schedule"
    assert not Manifest.objects.exists()
    with gc.exclusive():
        assert tasks.collect_garbage() == "another garbage collection is running"
    assert GcRun.objects.count() == 1


def test_refresh_of_popular_tags_with_nothing_popular(hub):
    assert (
        tasks.refresh_popular() == "0 unchanged, 0 moved and prefetched, 0 over budget, 0 errors, 0 manifests fetched"
    )


def test_accounts_are_verified_on_schedule(hub, settings):
    assert settings.CELERY_BEAT_SCHEDULE["verify-upstream-accounts"] == {
        "task": "registry.verify_accounts",
        "schedule": float(settings.MIRROR_ACCOUNT_VERIFY_INTERVAL),
    }
    assert tasks.verify_accounts() == "1 unreachable"  # the default upstream's anonymous account
    hub.refresh_from_db()
    assert hub.reachable is False
