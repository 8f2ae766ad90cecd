"""Upstreams and accounts in the admin: added and edited there, secrets write-only, records
from the environment or the file read-only; no secret in any page, API answer, log or row."""

from __future__ import annotations

import logging

from django.db import connection
import pytest

from registry import memory
from registry.models import Managed, Upstream, UpstreamAccount
from registry.upstreams import routing, verification

pytestmark = pytest.mark.django_db

ENV_SECRET = "env-secret-password-1"
ADMIN_SECRET = "admin-typed-secret-2"
NEW_SECRET = "replacement-secret-3"


@pytest.fixture
def hub(settings, tmp_path, upstream):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME = upstream.username
    settings.REGISTRY_PROXY_PASSWORD = ENV_SECRET  # wrong for the upstream: its verification fails
    settings.MIRROR_UPSTREAM_HOSTS = []
    return Upstream.objects.default()


def every_page(admin_client) -> str:
    pages = [
        "/admin/registry/upstream/",
        "/admin/registry/upstreamaccount/",
        "/admin/registry/accountswitch/",
        "/admin/",
    ]
    pages += [f"/admin/registry/upstream/{u.pk}/change/" for u in Upstream.objects.all()]
    pages += [f"/admin/registry/upstreamaccount/{a.pk}/change/" for a in UpstreamAccount.objects.all()]
    html = ""
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        html += response.content.decode()
    return html


def test_an_upstream_and_an_account_added_in_the_admin(admin_client, hub, upstream):
    response = admin_client.post(
        "/admin/registry/upstream/add/",
        {
            "name": "ghcr",
            "url": "https://ghcr.io",
            "hosts": "GHCR.io  docker.pkg.github.com",
            "alias": "ghcr",
            "stale_policy": "serve",
            "tls_verify": "on",
            "allow_repositories": "myorg/*",
            "accounts-TOTAL_FORMS": "0",
            "accounts-INITIAL_FORMS": "0",
            "account_switches-TOTAL_FORMS": "0",
            "account_switches-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    ghcr = Upstream.objects.get(name="ghcr")
    assert (ghcr.hosts, ghcr.alias, ghcr.managed_by) == ("ghcr.io, docker.pkg.github.com", "ghcr", Managed.ADMIN)
    assert routing.resolve("myorg/app", "ghcr.io").upstream == ghcr, "routed at once in this process"

    response = admin_client.post(
        "/admin/registry/upstreamaccount/add/",
        {
            "upstream": ghcr.pk,
            "username": "bot",
            "new_secret": ADMIN_SECRET,
            "position": "0",
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    account = UpstreamAccount.objects.get(upstream=ghcr, username="bot")
    assert account.get_secret() == ADMIN_SECRET and ADMIN_SECRET not in account.secret

    # Editing without a new secret keeps it; a new one replaces it.
    change = f"/admin/registry/upstreamaccount/{account.pk}/change/"
    form = {"upstream": ghcr.pk, "username": "bot", "new_secret": "", "position": "1", "enabled": "on"}
    assert admin_client.post(change, form).status_code == 302
    assert UpstreamAccount.objects.get(pk=account.pk).get_secret() == ADMIN_SECRET
    assert admin_client.post(change, {**form, "new_secret": NEW_SECRET}).status_code == 302
    assert UpstreamAccount.objects.get(pk=account.pk).get_secret() == NEW_SECRET
    page = admin_client.get(change).content.decode()
    assert 'type="password"' in page and NEW_SECRET not in page and ADMIN_SECRET not in page


def test_bad_aliases_and_hosts_are_refused(admin_client, hub):
    response = admin_client.post(
        "/admin/registry/upstream/add/",
        {
            "name": "bad",
            "url": "https://bad.example",
            "hosts": "bad host/x",
            "alias": "Two/Parts",
            "stale_policy": "serve",
            "accounts-TOTAL_FORMS": "0",
            "accounts-INITIAL_FORMS": "0",
            "account_switches-TOTAL_FORMS": "0",
            "account_switches-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "one path component" in page and "not a registry host name" in page
    assert not Upstream.objects.filter(name="bad").exists()


def test_records_from_the_environment_are_read_only_where_it_decides(admin_client, hub):
    account = UpstreamAccount.objects.get(upstream=hub)
    assert account.managed_by == Managed.ENVIRONMENT
    assert admin_client.get(f"/admin/registry/upstream/{hub.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/registry/upstreamaccount/{account.pk}/delete/").status_code == 403
    page = admin_client.get(f"/admin/registry/upstreamaccount/{account.pk}/change/").content.decode()
    assert 'name="username"' not in page and 'name="new_secret"' not in page, "the environment says these"
    assert 'name="enabled"' in page


def test_no_secret_in_pages_api_logs_or_database(admin_client, hub, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    ghcr = Upstream.objects.create(name="ghcr", url="http://127.0.0.1:9", hosts="ghcr.io")
    account = UpstreamAccount(upstream=ghcr, username="bot")
    account.set_secret(ADMIN_SECRET)
    account.save()
    verification.verify_all()  # the environment's password is rejected; ghcr is unreachable
    memory.forget_all()

    html = every_page(admin_client)
    assert "rejected" in html, "the verification is shown"
    api = admin_client.get("/api/accounts/")
    assert api.status_code == 200
    assert {"bot", upstream.username} <= {row["username"] for row in api.json()}
    readyz = admin_client.get("/readyz")
    assert readyz.status_code == 200
    report = readyz.json()["upstreams"]
    assert report["ghcr"]["status"] == "unreachable"
    # Accounts by id: /readyz names none.
    hub_account = UpstreamAccount.objects.get(upstream=hub, username=upstream.username)
    assert report[hub.name]["accounts"][str(hub_account.pk)]["verification"] == "rejected"
    assert upstream.username not in readyz.content.decode() and '"bot"' not in readyz.content.decode()

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM registry_upstreamaccount")
        database = repr(cursor.fetchall())
    for secret in (ENV_SECRET, ADMIN_SECRET):
        assert secret not in html
        assert secret not in api.content.decode()
        assert secret not in readyz.content.decode()
        assert secret not in caplog.text
        assert secret not in database
