"""The REST API fuzzed from its own OpenAPI schema (schemathesis): every operation, with
generated parameters and bodies, answered by the real views as staff with every permission.
No answer is a server error, and answers conform to the schema (status codes, content
types, bodies)."""

from __future__ import annotations

from django.core.wsgi import get_wsgi_application
from hypothesis import settings as hypothesis_settings
import pytest
from rest_framework.authtoken.models import Token
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from registry.jobs import tasks
from tests.dashboard.conftest import WRITE_PERMISSIONS, make_user

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def staff_token(transactional_db, store, monkeypatch) -> str:
    """The token of staff who may do everything the API offers."""
    operator = make_user("fuzzer", staff=True, permissions=WRITE_PERMISSIONS)
    monkeypatch.setattr(tasks.prefetch, "delay", lambda job_id: None)  # a queued prefetch stays queued
    return Token.objects.create(user=operator).key


@pytest.fixture
def api_schema(staff_token):
    """The schema as /api/schema/ serves it to staff, bound to the WSGI application."""
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", get_wsgi_application(), headers={"Authorization": f"Token {staff_token}"}
    )


lazy = schemathesis.pytest.from_fixture("api_schema")


@lazy.parametrize()
@hypothesis_settings(max_examples=8, deadline=None, database=None)
@pytest.mark.django_db(transaction=True)  # the WSGI handler closes connections after each request
def test_the_api_answers_what_its_schema_says(case, staff_token):
    case.call_and_validate(headers={"Authorization": f"Token {staff_token}"}, checks=CHECKS)
