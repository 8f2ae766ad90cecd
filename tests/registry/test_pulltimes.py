"""Pull counts per tag and day, written with the buffered pull times."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
import pytest

from registry.models import Tag, TagPullCount, Upstream
from registry.proxy import pulltimes
from registry.storage.blobstore import FilesystemStore
from tests.registry.cachestate import cache_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def tags(settings, tmp_path) -> list[Tag]:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_PULL_TIME_FLUSH_INTERVAL = 3600
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    pulltimes.flush()
    hub = Upstream.objects.default()
    store = FilesystemStore(tmp_path)
    return [Tag.objects.get(manifest=cache_image(store, hub, f"library/{n}", "1", [n.encode() * 10])) for n in "ab"]


def test_pulls_are_counted_in_memory_and_written_in_one_flush(tags):
    a, b = tags
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            pulltimes.record(Tag, "pk", a.pk)
        pulltimes.record(Tag, "pk", b.pk)
    assert len(queries) == 0, "no database write per pull"
    assert not TagPullCount.objects.exists()
    pulltimes.flush()
    today = timezone.now().date()
    assert dict(TagPullCount.objects.filter(day=today).values_list("tag_id", "count")) == {a.pk: 5, b.pk: 1}
    pulltimes.record(Tag, "pk", a.pk)
    pulltimes.flush()
    assert TagPullCount.objects.get(tag=a, day=today).count == 6, "added to the day's count"


def test_each_day_has_its_own_count(tags):
    a, _ = tags
    yesterday = timezone.now().date() - timedelta(days=1)
    TagPullCount.objects.create(tag=a, day=yesterday, count=9)
    pulltimes.record(Tag, "pk", a.pk)
    pulltimes.flush()
    assert dict(TagPullCount.objects.values_list("day", "count")) == {yesterday: 9, timezone.now().date(): 1}


def test_uncounted_pulls_keep_their_times_but_not_their_count(tags):
    a, _ = tags
    with pulltimes.uncounted():
        pulltimes.record(Tag, "pk", a.pk)
    pulltimes.flush()
    a.refresh_from_db()
    assert a.last_pulled_at is not None
    assert not TagPullCount.objects.exists()


def test_counts_of_a_tag_evicted_meanwhile_are_dropped(tags):
    a, b = tags
    pulltimes.record(Tag, "pk", a.pk)
    pulltimes.record(Tag, "pk", b.pk)
    Tag.objects.filter(pk=a.pk).delete()
    pulltimes.flush()
    assert list(TagPullCount.objects.values_list("tag_id", "count")) == [(b.pk, 1)]
