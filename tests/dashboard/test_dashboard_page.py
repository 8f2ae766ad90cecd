"""The dashboard as the admin's landing page, the prefetch form with live progress, and
account secrets that no page, API answer, metric or log line ever shows."""

from __future__ import annotations

import logging
from xml.etree import ElementTree

import pytest

from access.models import AccessRule, Policy
from dashboard import figures, stats
from mirrorsite.celery import app
from registry.jobs.gc import format_bytes
from registry.models import Blob, PrefetchJob, UpstreamAccount
from tests.dashboard.conftest import api_client
from tests.registry.cachestate import blob_digests, cache_image, cache_index

pytestmark = pytest.mark.django_db(transaction=True)


def pull(client, path: str) -> bytes:
    response = client.get(path)
    assert response.status_code == 200, path
    if response.streaming:
        body = b"".join(response.streaming_content)
        response.close()
        return body
    return response.content


def test_only_staff_reach_the_dashboard(client, hub, outsider):
    anonymous = client.get("/admin/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    client.force_login(outsider)
    refused = client.get("/admin/")
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    assert b"Hit rate" not in refused.content


def test_the_landing_page_shows_the_figures_after_pulls(admin_client, client, hub, images, upstream):
    layer = images.small.layers[0]
    manifest = len(images.small.manifest)
    for _ in range(3):
        pull(client, f"/v2/library/small/blobs/{layer.digest}")  # one miss, two hits
    for _ in range(2):
        pull(client, "/v2/library/small/manifests/1")  # one miss, one hit
    stats.flush()
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="hit-rate-24h"' in html and "60.0%" in html, "3 hits of 5 requests"
    assert format_bytes(2 * layer.size + manifest) in html, "bandwidth saved: served less fetched"
    assert upstream.username in html and "in use" in html
    assert "library/small" in html, "among the top repositories and the largest images"
    charts = [part.split("</svg>")[0] for part in html.split('<svg class="chart"')[1:]]
    assert len(charts) == 4
    for chart in charts:
        ElementTree.fromstring('<svg class="chart"' + chart + "</svg>")  # well-formed SVG
    assert 'href="/admin/registry/prefetchjob/add/"' in html, "the Prefetch image button"
    assert "Everything in the admin" in html and "/admin/registry/blob/" in html, "the models are a click away"
    assert "//cdn" not in html and "https://" not in html.replace(hub.url, "")


def test_the_prefetch_image_form_queues_the_job_and_shows_its_progress(admin_client, hub, images, monkeypatch):
    monkeypatch.setattr(app.conf, "task_always_eager", True)  # the worker, in this process
    form = admin_client.get("/admin/registry/prefetchjob/add/").content.decode()
    assert 'name="platform_choices"' in form and 'value="linux/arm64"' in form and 'name="image"' in form
    response = admin_client.post(
        "/admin/registry/prefetchjob/add/",
        {"image": "library/multi:1", "platform_choices": ["linux/arm64"], "platform_list": ""},
    )
    job = PrefetchJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/registry/prefetchjob/{job.pk}/change/"
    assert (job.platforms, job.status) == ("linux/arm64", PrefetchJob.Status.SUCCEEDED)
    page = admin_client.get(response["Location"]).content.decode()
    assert 'id="job-progress"' in page and f'data-job-url="/api/prefetch-jobs/{job.pk}/"' in page
    assert 'data-status="succeeded"' in page and "2/2 blobs" in page and "dashboard/live.js" in page
    listing = admin_client.get("/admin/registry/prefetchjob/").content.decode()
    assert 'data-status="succeeded"' in listing
    dashboard = admin_client.get("/admin/").content.decode()
    assert f'id="job-{job.pk}"' in dashboard and 'data-finished="true"' in dashboard
    both = admin_client.post(
        "/admin/registry/prefetchjob/add/",
        {"image": "library/multi:1", "platform_choices": ["linux/arm64"], "platform_list": "linux/amd64"},
    )
    assert both.status_code == 302
    assert PrefetchJob.objects.order_by("-pk").first().platforms == "linux/arm64,linux/amd64"


def test_account_secrets_appear_nowhere(admin_client, client, hub, images, upstream, caplog, settings):
    caplog.set_level(logging.DEBUG)
    account = UpstreamAccount.objects.get(upstream=hub, username=upstream.username)
    ciphertext = account.secret
    assert ciphertext and upstream.password not in ciphertext
    pull(client, "/v2/library/small/manifests/1")
    AccessRule.objects.create(pattern="private/*", policy=Policy.PUBLIC)  # opened to anonymous clients
    pull(client, "/v2/private/secret/manifests/1")
    stats.flush()
    settings.MIRROR_METRICS_TOKEN = ""
    pages = [
        admin_client.get(path)
        for path in (
            "/admin/",
            "/admin/registry/upstreamaccount/",
            f"/admin/registry/upstreamaccount/{account.pk}/change/",
            "/admin/dashboard/upstreamevent/",
            "/admin/registry/prefetchjob/add/",
        )
    ]
    api = api_client(account_user(admin_client))
    answers = [
        api.get(path)
        for path in (
            "/api/accounts/",
            "/api/stats/summary/",
            "/api/stats/top/",
            "/api/upstream-events/",
            "/api/schema/?format=json",
        )
    ]
    metrics = client.get("/metrics")
    for response in [*pages, *answers, metrics]:
        assert response.status_code == 200
        body = response.content.decode()
        assert upstream.password not in body and ciphertext not in body, response
    assert upstream.password not in caplog.text and ciphertext not in caplog.text


def account_user(admin_client):
    from django.contrib.auth.models import User

    return User.objects.get(username="admin")


def test_repositories_and_tags_show_the_bytes_they_hold(admin_client, hub, store):
    amd = cache_image(store, hub, "library/app", None, [b"a" * 1000])
    arm = cache_image(store, hub, "library/app", None, [b"b" * 3000])
    index = cache_index(hub, "library/app", "1", {"linux/amd64": amd, "linux/arm64": arm})
    blobs = sum(Blob.objects.filter(digest__in=blob_digests(amd) + blob_digests(arm)).values_list("size", flat=True))
    assert blobs > 4000  # two layers and two configs
    assert figures.image_bytes(index.pk) == index.size + amd.size + arm.size + blobs
    tags = admin_client.get("/admin/registry/tag/").content.decode()
    assert "image size" in tags.lower() and format_bytes(index.size + amd.size + arm.size + blobs) in tags
    repositories = admin_client.get("/admin/registry/repository/").content.decode()
    assert "blobs stored" in repositories.lower() and format_bytes(blobs) in repositories
