"""A NUL character in a query string is a clean 400, never a database error (PostgreSQL
rejects such strings outright, so this failed with a 500 on the PostgreSQL pass)."""

import json

from django.contrib.auth.models import User
import pytest
from rest_framework.authtoken.models import Token


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v2/_catalog?last=a%00b", "/v2/library/alpine/tags/list?last=%00", "/v2/?ns=%00"])
def test_registry_answers_in_its_error_format(client, path):
    response = client.get(path)
    assert response.status_code == 400
    assert response["Docker-Distribution-API-Version"] == "registry/2.0"
    assert json.loads(response.content)["errors"] == [
        {"code": "NAME_INVALID", "message": "the query string contains a NUL character"}
    ]


@pytest.mark.django_db
def test_api_answers_400_for_a_nul_in_a_filter(client):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    token = Token.objects.create(user=user)
    response = client.get("/api/stats/summary/?account=a%00b", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 400
    assert json.loads(response.content) == {"detail": "the query string contains a NUL character"}
    ok = client.get("/api/stats/summary/?account=ab", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert ok.status_code == 200
