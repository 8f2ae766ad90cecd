"""The REST API's credentials and throttles: API tokens counted by the password-guessing
limiter per address, requests throttled per client, and neither failing when Redis is down."""

from __future__ import annotations

from django.contrib.auth.models import User
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    settings.MIRROR_LOGIN_ATTEMPTS = 5
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 3
    settings.MIRROR_LOGIN_LOCKOUT = 600
    settings.REDIS_URL = ""


@pytest.fixture
def staff_token() -> str:
    return Token.objects.create(user=User.objects.create_user("staff", password="pw-staff", is_staff=True)).key


def api(address: str, token: str | None = None) -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_guessed_api_tokens_lock_the_address_out(limits, staff_token):
    for guess in range(3):
        assert api("192.0.2.9", f"{guess:040d}").get("/api/stats/summary/").status_code == 401
    refused = api("192.0.2.9", staff_token).get("/api/stats/summary/")
    assert refused.status_code == 429, "the right token is not even looked up"
    assert refused["Retry-After"] == "600"
    assert api("198.51.100.9", staff_token).get("/api/stats/summary/").status_code == 200, "another address"


def test_a_good_token_gives_its_attempt_back(limits, staff_token):
    for _ in range(10):
        assert api("192.0.2.9", staff_token).get("/api/stats/summary/").status_code == 200


def test_requests_are_throttled_per_user(settings, staff_token):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "3/minute", "user": "3/minute"},
    }
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    configured = SimpleRateThrottle.THROTTLE_RATES  # read once by DRF, at import
    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        answers = [api(f"192.0.2.{10 + n}", staff_token).get("/api/stats/summary/") for n in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429], "the user's, from any address"
        assert int(answers[-1]["Retry-After"]) > 0
    finally:
        SimpleRateThrottle.THROTTLE_RATES = configured


def test_a_throttle_whose_redis_is_down_lets_the_api_answer(settings, staff_token):
    settings.CACHES = {
        **settings.CACHES,
        "api-throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 1},
        },
    }
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    assert api("192.0.2.12", staff_token).get("/api/stats/summary/").status_code == 200
    assert api("192.0.2.12").get("/api/stats/summary/").status_code == 401
