"""The audit log's admin: a read-only changelist that filters and searches."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth.models import User
import pytest

from audit.models import PullRecord

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/audit/pullrecord/"
DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def log() -> list[PullRecord]:
    runner = User.objects.create_user("ci-runner")
    when = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    rows = [
        PullRecord(
            at=when,
            user=runner,
            username="ci-runner",
            client_address="10.1.2.3",
            method="GET",
            upstream="docker-hub",
            repository="library/nginx",
            reference="1.27",
            digest=DIGEST,
            outcome="hit",
            status=200,
        ),
        PullRecord(
            at=when,
            client_address="192.0.2.44",
            method="GET",
            upstream="ghcr",
            repository="owner/tool",
            reference="v2",
            outcome="denied",
            status=403,
        ),
        PullRecord(
            at=datetime(2025, 1, 2, tzinfo=UTC),
            client_address="2001:db8::5",
            method="HEAD",
            upstream="docker-hub",
            repository="library/alpine",
            reference="3.20",
            outcome="miss",
            status=200,
        ),
    ]
    return PullRecord.objects.bulk_create(rows)


def listed(admin_client, query: str = "") -> str:
    response = admin_client.get(CHANGELIST + query)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_changelist_lists_every_record_with_its_filters(admin_client, log):
    page = listed(admin_client)
    for repository in ("library/nginx", "owner/tool", "library/alpine"):
        assert repository in page
    for filter_title in ("By outcome", "By upstream", "By method", "By user", "By at"):
        assert filter_title in page, filter_title
    assert "?at__year=2025" in page and "?at__year=2026" in page, "the date hierarchy offers both years"


@pytest.mark.parametrize(
    "query,expected",
    [
        ("?outcome__exact=denied", {"owner/tool"}),
        ("?upstream=docker-hub", {"library/nginx", "library/alpine"}),
        ("?method=HEAD", {"library/alpine"}),
        ("?at__year=2026&at__month=3", {"library/nginx", "owner/tool"}),
        ("?q=owner/tool", {"owner/tool"}),
        ("?q=" + DIGEST[:20], {"library/nginx"}),
        ("?q=192.0.2.44", {"owner/tool"}),
        ("?q=ci-runner", {"library/nginx"}),
    ],
)
def test_filters_and_search_narrow_the_list(admin_client, log, query, expected):
    page = listed(admin_client, query)
    shown = {r for r in ("library/nginx", "owner/tool", "library/alpine") if f">{r}<" in page}
    assert shown == expected


def test_the_user_filter_lists_users_with_records(admin_client, log):
    runner = User.objects.get(username="ci-runner")
    page = listed(admin_client, f"?user__id__exact={runner.pk}")
    assert ">library/nginx<" in page and ">owner/tool<" not in page


def test_records_cannot_be_added_changed_or_deleted(admin_client, log):
    record = log[0]
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    detail = admin_client.get(f"{CHANGELIST}{record.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert admin_client.post(f"{CHANGELIST}{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert PullRecord.objects.filter(pk=record.pk).exists()


def test_staff_without_permission_cannot_read_the_log(client, log):
    staff = User.objects.create_user("looker", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(CHANGELIST).status_code == 403
