"""The /v2/ API's answers to input that never needs the upstream."""

import json

import pytest

from registry.models import Repository

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def unreachable_upstream(settings, tmp_path):
    # Nothing listens on port 9 of loopback: any upstream contact would fail loudly.
    settings.REGISTRY_PROXY_REMOTEURL = "http://127.0.0.1:9"
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 0.5


def error_code(response) -> str:
    return json.loads(response.content)["errors"][0]["code"]


def test_base_endpoint(client):
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.json() == {}
    assert response["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize(
    "path,status,code",
    [
        ("/v2/UPPER/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a/../b/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a/%2e%2e/b/blobs/" + DIGEST, 400, "NAME_INVALID"),
        ("/v2/alpine/manifests/.bad", 400, "TAG_INVALID"),
        ("/v2/alpine/manifests/sha256:123", 400, "DIGEST_INVALID"),
        ("/v2/alpine/blobs/sha256:..%2f..%2fetc%2fpasswd", 404, "NAME_UNKNOWN"),
        ("/v2/alpine/blobs/sha256:..", 400, "DIGEST_INVALID"),
        ("/v2/alpine/blobs/latest", 400, "DIGEST_INVALID"),
        ("/v2/alpine/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("/v2/alpine/referrers/nope", 400, "DIGEST_INVALID"),
        ("/v2/alpine/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/alpine/tags/list?n=abc", 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/_catalog?n=x", 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/alpine/nothing/here", 404, "NAME_UNKNOWN"),
        # `$` matched before a final newline: such a tag reached the upstream.
        ("/v2/alpine/manifests/latest%0A", 400, "TAG_INVALID"),
        ("/v2/alpine/blobs/sha256:" + "a" * 64 + "%0A", 400, "DIGEST_INVALID"),
        ("/v2/alpine/tags/list?n=%C2%B2", 400, "PAGINATION_NUMBER_INVALID"),  # "²".isdigit(), int("²") fails
        ("/v2//manifests/%0A", 404, "NAME_UNKNOWN"),  # `.` stops at a newline: was Django's HTML 404
        # A newline in the path matched no route: Django's HTML 404 page answered.
        ("/v2/a%0Ab/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a%0Ab/tags/list", 400, "NAME_INVALID"),
        ("/v2/x%0A", 404, "NAME_UNKNOWN"),
    ],
)
def test_bad_input_gets_registry_errors_and_touches_nothing(client, tmp_path, path, status, code):
    response = client.get(path)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert error_code(response) == code
    assert not Repository.objects.exists()
    assert list((tmp_path / "blobs").rglob("*")) == []
    assert list((tmp_path / "tmp").rglob("*")) == []


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/v2/alpine/blobs/uploads/"),
        ("patch", "/v2/alpine/blobs/uploads/some-uuid"),
        ("put", "/v2/alpine/blobs/uploads/some-uuid?digest=" + DIGEST),
        ("put", "/v2/alpine/manifests/latest"),
        ("delete", "/v2/alpine/manifests/" + DIGEST),
        ("delete", "/v2/alpine/blobs/" + DIGEST),
        ("post", "/v2/alpine/blobs/uploads/?mount=" + DIGEST + "&from=other"),
        ("put", "/v2/"),
    ],
)
def test_writes_are_unsupported(client, method, path):
    response = getattr(client, method)(path, data=b"x", content_type="application/octet-stream")
    assert response.status_code == 405
    assert error_code(response) == "UNSUPPORTED"
    assert not Repository.objects.exists()


def test_head_errors_have_no_body(client):
    response = client.head("/v2/UPPER/manifests/latest")
    assert response.status_code == 400
    assert response.content == b""


def test_referrers_is_an_empty_index(client):
    response = client.get(f"/v2/library/alpine/referrers/{DIGEST}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert response.json() == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    }


def test_unreachable_upstream_is_unavailable_not_500(client):
    response = client.get("/v2/library/alpine/manifests/latest")
    assert response.status_code == 503
    assert error_code(response) == "UNAVAILABLE"
    response = client.get(f"/v2/library/alpine/blobs/{DIGEST}")
    assert response.status_code == 503
    assert error_code(response) == "UNAVAILABLE"


def test_catalog_lists_cached_repositories_with_pagination(client):
    from registry.models import Upstream

    upstream = Upstream.objects.default()
    for name in ["library/c", "library/a", "library/b"]:
        Repository.objects.create(upstream=upstream, name=name)
    assert client.get("/v2/_catalog").json() == {"repositories": ["library/a", "library/b", "library/c"]}
    first = client.get("/v2/_catalog?n=2")
    assert first.json() == {"repositories": ["library/a", "library/b"]}
    assert first["Link"] == '</v2/_catalog?n=2&last=library%2Fb>; rel="next"'
    second = client.get("/v2/_catalog?n=2&last=library/b")
    assert second.json() == {"repositories": ["library/c"]}
    assert "Link" not in second


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
