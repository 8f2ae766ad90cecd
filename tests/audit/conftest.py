"""Fixtures of the audit log's tests: the dashboard's mirror of the session's real upstream,
and an empty audit buffer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from audit import recorder
from tests.dashboard.conftest import empty_buffer, hub, store  # noqa: F401 (the same mirror set-up)


@pytest.fixture(autouse=True)
def empty_audit_buffer() -> Iterator[None]:
    """Each test sees only what it recorded."""
    recorder.take()
    yield
    recorder.take()
