"""The access tests' mirror: the session's real upstream (token auth, a private repository),
in this process, with users and groups of its own."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
import pytest

from tests.dashboard.conftest import hub, store  # noqa: F401  (the same mirror of the session's upstream)


@pytest.fixture
def auth_on(settings) -> None:
    settings.MIRROR_AUTH = True
    settings.MIRROR_AUTH_SERVICE = "mirror.test"
    settings.MIRROR_AUTH_TOKEN_KEY = "access-test-key"


@pytest.fixture
def builders(db) -> Group:
    return Group.objects.create(name="builders")


@pytest.fixture
def alice(builders) -> User:
    """A user in the builders group."""
    user = User.objects.create_user("alice", password="alice-password")
    user.groups.add(builders)
    return user


@pytest.fixture
def bob(db) -> User:
    """A user in no group."""
    return User.objects.create_user("bob", password="bob-password")
