"""Fixtures of the dashboard's tests: the mirror pointed at the session's real upstream, an
empty statistics buffer, and users of every kind (staff with and without permissions)."""

from __future__ import annotations

from collections.abc import Iterator

from django.contrib.auth.models import Permission, User
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dashboard import stats
from registry.models import Upstream
from registry.storage.blobstore import BlobStore, FilesystemStore


@pytest.fixture(autouse=True)
def empty_buffer() -> Iterator[None]:
    """Each test sees only what it recorded."""
    stats.take()
    yield
    stats.take()


@pytest.fixture
def store(settings, tmp_path) -> BlobStore:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    settings.MIRROR_STATS_REDIS_URL = ""
    return FilesystemStore(tmp_path)


@pytest.fixture
def hub(settings, store, upstream) -> Upstream:
    """The default upstream: the session's token-auth Distribution, with its account."""
    settings.REGISTRY_PROXY_REMOTEURL = upstream.url
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = upstream.username, upstream.password
    settings.MIRROR_TAG_TTL = 3600
    return Upstream.objects.default()


def make_user(username: str, *, staff: bool, permissions: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password="pw-" + username, is_staff=staff)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # permissions are cached per instance


WRITE_PERMISSIONS = ("registry.add_prefetchjob", "registry.add_pin", "registry.delete_pin", "registry.delete_manifest")


@pytest.fixture
def reader(db) -> User:
    """Staff who may look but not act."""
    return make_user("reader", staff=True)


@pytest.fixture
def operator(db) -> User:
    """Staff who may prefetch, pin and evict."""
    return make_user("operator", staff=True, permissions=WRITE_PERMISSIONS)


@pytest.fixture
def outsider(db) -> User:
    """A user who is not staff, whatever permissions it was given."""
    return make_user("outsider", staff=False, permissions=WRITE_PERMISSIONS)


def api_client(user: User | None = None, *, token: bool = True) -> APIClient:
    client = APIClient()
    if user is not None:
        if token:
            client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        else:
            client.force_login(user)
    return client
