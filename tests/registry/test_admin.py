"""The cache's admin pages render for staff and cannot change what was cached."""

import pytest

from registry import oci
from registry.models import Blob, Manifest, Repository, Tag, Upstream, UpstreamAccount
from registry.proxy import blobs, manifests
from registry.upstreams.routing import Route

# Filling a blob writes from a background thread: real transactions, not a rolled-back one.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cached(settings, tmp_path, upstream, images):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME = upstream.username
    settings.REGISTRY_PROXY_PASSWORD = upstream.password
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    hub = Upstream.objects.default()
    manifests.get_manifest(Route(hub, "small"), oci.parse_reference("1"))
    layer = images.small.layers[0]
    b"".join(blobs.fetch_blob(Route(hub, "small"), oci.parse_digest(layer.digest)).chunks)
    return hub


@pytest.mark.parametrize("model", [Repository, Tag, Manifest, Blob])  # upstreams: test_admin_upstreams.py
def test_changelists_and_detail_pages_are_read_only(admin_client, cached, model):
    opts = model._meta
    listing = admin_client.get(f"/admin/{opts.app_label}/{opts.model_name}/")
    assert listing.status_code == 200
    obj = model.objects.first()
    assert obj is not None
    assert str(obj.pk) in listing.content.decode()
    detail = admin_client.get(f"/admin/{opts.app_label}/{opts.model_name}/{obj.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content, "no save button: the cache is read-only here"
    assert admin_client.get(f"/admin/{opts.app_label}/{opts.model_name}/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/{opts.app_label}/{opts.model_name}/{obj.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert model.objects.filter(pk=obj.pk).exists()


def test_the_upstream_account_in_use_is_shown(admin_client, cached, upstream):
    account = UpstreamAccount.objects.get()
    assert account.username == upstream.username
    page = admin_client.get("/admin/registry/upstreamaccount/").content.decode()
    assert upstream.username in page
    assert upstream.password not in page


def test_admin_requires_staff(client):
    response = client.get("/admin/registry/blob/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
