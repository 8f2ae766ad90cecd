"""A registry endpoint whose database, bucket or Redis fails answers 503 UNAVAILABLE in the
registry's JSON (the client may retry elsewhere), never a 500; a bug stays a 500."""

from __future__ import annotations

import json

from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from django.db import IntegrityError, OperationalError
from django.test import RequestFactory
import pytest
import redis

from registry.api.responses import registry_endpoint


def answer(error: Exception, method: str = "GET"):
    @registry_endpoint
    def view(request):
        raise error

    return view(RequestFactory().generic(method, "/v2/library/small/manifests/1"))


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("connection timeout expired"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        redis.TimeoutError("Timeout reading from socket"),
    ],
    ids=["database", "bucket-unreachable", "bucket-hung", "redis"],
)
def test_a_dependency_that_fails_is_503_unavailable(error, caplog):
    response = answer(error)
    assert response.status_code == 503
    assert json.loads(response.content)["errors"][0]["code"] == "UNAVAILABLE"
    assert response["Docker-Distribution-API-Version"] == "registry/2.0"
    assert "Traceback" not in caplog.text, "an outage, not a crash"
    head = answer(error, "HEAD")
    assert head.status_code == 503 and head.content == b""


def test_a_database_error_that_is_a_bug_stays_a_500():
    response = answer(IntegrityError("duplicate key"))
    assert response.status_code == 500
