"""Access rules are managed in the admin and apply at once."""

from __future__ import annotations

import pytest

from access.models import AccessRule, RepositoryVisibility

pytestmark = pytest.mark.django_db(transaction=True)


def test_rule_made_in_the_admin_applies(admin_client, client, hub, images, builders, auth_on):
    assert client.get("/v2/library/small/manifests/1").status_code == 200
    response = admin_client.post(
        "/admin/access/accessrule/add/",
        {
            "position": "5",
            "pattern": "library/*",
            "upstream": str(hub.pk),
            "policy": "groups",
            "groups": [str(builders.pk)],
            "note": "builders only",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    rule = AccessRule.objects.get()
    assert list(rule.groups.all()) == [builders] and rule.upstream == hub
    assert client.get("/v2/library/small/manifests/1").status_code == 401
    listing = admin_client.get("/admin/access/accessrule/")
    assert b"library/*" in listing.content and b"builders" in listing.content


def test_visibilities_are_shown_and_deleting_one_has_it_asked_again(admin_client, client, hub, images):
    assert client.get("/v2/private/secret/manifests/1").status_code == 403
    record = RepositoryVisibility.objects.get(repository="private/secret")
    assert admin_client.get("/admin/access/repositoryvisibility/").status_code == 200
    page = admin_client.get(f"/admin/access/repositoryvisibility/{record.pk}/change/")
    assert page.status_code == 200
    assert (
        admin_client.post(f"/admin/access/repositoryvisibility/{record.pk}/delete/", {"post": "yes"}).status_code == 302
    )
    assert client.get("/v2/private/secret/manifests/1").status_code == 403
    assert RepositoryVisibility.objects.filter(repository="private/secret", public=False).exists(), "asked again"
