"""The password-guessing limiter (access/attempts.py): atomic under parallel guesses, in the
database and in Redis, refusing before any password is hashed, and failing soft."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import ipaddress
import threading
import uuid

from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.db import connection
import pytest
import redis

from access import attempts
from access.credentials import BadCredentials, check_password
from access.models import PasswordAttempts

REDIS_URL = "redis://127.0.0.1:6379/11"
NOBODY_LISTENS = "redis://127.0.0.1:9/0"
ADDRESS = ipaddress.ip_address("192.0.2.7")


class CountingHasher(MD5PasswordHasher):
    """A real (fast) hasher that counts how many passwords it was asked to verify."""

    verified = 0
    _lock = threading.Lock()

    def verify(self, password: str, encoded: str) -> bool:
        with CountingHasher._lock:
            CountingHasher.verified += 1
        return super().verify(password, encoded)


@pytest.fixture
def limits(settings):
    settings.MIRROR_LOGIN_ATTEMPTS = 5
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 20
    settings.MIRROR_LOGIN_LOCKOUT = 600
    settings.REDIS_URL = ""


@pytest.fixture
def shared_redis(settings, limits):
    settings.REDIS_URL = REDIS_URL
    settings.MIRROR_REDIS_KEY_PREFIX = f"attempts-test-{uuid.uuid4().hex[:12]}:"
    yield redis.Redis.from_url(REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{settings.MIRROR_REDIS_KEY_PREFIX}*"):
        client.delete(key)


def guess_in_parallel(guess, count: int = 32) -> list[object]:
    """`count` threads start `guess` together; each answer (or the exception raised)."""
    barrier = threading.Barrier(count)

    def one(_: int) -> object:
        barrier.wait()
        try:
            return guess()
        except Exception as error:  # what the guess raised is its answer
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.django_db(transaction=True)
def test_parallel_guesses_in_the_database_reserve_no_more_than_the_limit(limits):
    answers = guess_in_parallel(lambda: attempts.begin("alice", ADDRESS))
    assert sum(isinstance(answer, attempts.Attempt) for answer in answers) == 5
    refused = [answer for answer in answers if isinstance(answer, attempts.TooManyAttempts)]
    assert len(refused) == 27
    assert all(0 < answer.retry_after <= 600 for answer in refused)
    assert PasswordAttempts.objects.get(key=attempts.counters("alice", ADDRESS)[0].key).count == 5


@pytest.mark.django_db(transaction=True)
def test_parallel_guesses_in_redis_reserve_no_more_than_the_limit(shared_redis):
    answers = guess_in_parallel(lambda: attempts.begin("alice", ADDRESS))
    assert sum(isinstance(answer, attempts.Attempt) for answer in answers) == 5
    assert sum(isinstance(answer, attempts.TooManyAttempts) for answer in answers) == 27
    assert not PasswordAttempts.objects.exists(), "counted in Redis only"


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_passwords_hash_no_more_than_the_limit(limits, settings):
    settings.PASSWORD_HASHERS = ["tests.access.test_attempts.CountingHasher"]
    User.objects.create_user("alice", password="alice-password")
    CountingHasher.verified = 0
    answers = guess_in_parallel(lambda: check_password("alice", "wrong", ADDRESS))
    assert CountingHasher.verified <= 5
    assert sum(isinstance(answer, BadCredentials) for answer in answers) == 5
    assert sum(isinstance(answer, attempts.TooManyAttempts) for answer in answers) == 27
    with pytest.raises(attempts.TooManyAttempts):
        check_password("alice", "alice-password", ADDRESS)
    assert CountingHasher.verified <= 5, "a refused check hashes nothing, not even the right password"


@pytest.mark.django_db
def test_a_success_clears_the_user_name_and_gives_the_address_its_attempt_back(limits):
    for _ in range(4):
        attempts.begin("alice", ADDRESS)
    attempts.begin("alice", ADDRESS).succeeded()
    user, where = attempts.counters("alice", ADDRESS)
    assert PasswordAttempts.objects.get(key=user.key).count == 0
    assert PasswordAttempts.objects.get(key=where.key).count == 4
    for _ in range(5):
        attempts.begin("alice", ADDRESS)
    with pytest.raises(attempts.TooManyAttempts):
        attempts.begin("alice", ADDRESS)


@pytest.mark.django_db
def test_the_address_limit_holds_across_user_names(limits, settings):
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 3
    for name in ("a", "b", "c"):
        attempts.begin(name, ADDRESS)
    with pytest.raises(attempts.TooManyAttempts):
        attempts.begin("d", ADDRESS)
    attempts.begin("d", ipaddress.ip_address("192.0.2.8"))  # another client


@pytest.mark.django_db
def test_an_ipv6_client_is_its_64(limits, settings):
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 2
    attempts.begin("a", ipaddress.ip_address("2001:db8:1:2::1"))
    attempts.begin("b", ipaddress.ip_address("2001:db8:1:2::ffff"))
    with pytest.raises(attempts.TooManyAttempts):
        attempts.begin("c", ipaddress.ip_address("2001:db8:1:2:abcd::9"))
    attempts.begin("c", ipaddress.ip_address("2001:db8:1:3::1"))


@pytest.mark.django_db
def test_refused_checks_are_not_counted_and_the_window_ends(limits):
    for _ in range(5):
        attempts.begin("alice", ADDRESS)
    for _ in range(10):
        with pytest.raises(attempts.TooManyAttempts):
            attempts.begin("alice", ADDRESS)
    assert PasswordAttempts.objects.get(key=attempts.counters("alice", ADDRESS)[0].key).count == 5
    from django.utils import timezone

    PasswordAttempts.objects.update(window_ends=timezone.now())  # the window is over
    attempts.begin("alice", ADDRESS)
    assert PasswordAttempts.objects.get(key=attempts.counters("alice", ADDRESS)[0].key).count == 1


@pytest.mark.django_db
def test_no_limit_when_set_to_zero(limits, settings):
    settings.MIRROR_LOGIN_ATTEMPTS = 0
    settings.MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = 0
    for _ in range(30):
        attempts.begin("alice", ADDRESS)
    assert not PasswordAttempts.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_redis_down_fails_soft_to_the_database(limits, settings, caplog):
    settings.REDIS_URL = NOBODY_LISTENS
    attempts._last_warning.clear()
    answers = guess_in_parallel(lambda: attempts.begin("alice", ADDRESS), count=12)
    assert sum(isinstance(answer, attempts.Attempt) for answer in answers) == 5, "still limited, and atomic"
    assert sum(isinstance(answer, attempts.TooManyAttempts) for answer in answers) == 7
    assert "cannot be counted in Redis" in caplog.text


@pytest.mark.django_db
def test_redis_counts_are_shared_by_whoever_uses_that_redis(shared_redis):
    """Two replicas are two clients of one Redis: counted together."""
    for _ in range(3):
        attempts.RedisStore(REDIS_URL).reserve([attempts.counters("alice", ADDRESS)[0]], 600)
    other_replica = redis.Redis.from_url(REDIS_URL)  # a client of its own
    assert other_replica.exists(f"{attempts.RedisStore(REDIS_URL)._prefix}{attempts.counters('alice', ADDRESS)[0].key}")
    for _ in range(2):
        attempts.begin("alice", ADDRESS)
    with pytest.raises(attempts.TooManyAttempts) as refused:
        attempts.begin("alice", ADDRESS)
    assert 590 <= refused.value.retry_after <= 600


@pytest.mark.django_db(transaction=True)
def test_a_hung_redis_costs_one_timeout_and_the_database_counts(limits, settings):
    """A Redis that accepts and never answers: the reservation gives up after the client's timeout
    (pytest-timeout would catch a hang) and counts in the database; the limit holds."""
    from registry import redisclients
    from tests.support.tcp_relay import TcpRelay

    hung = TcpRelay().start()
    try:
        settings.REDIS_URL = f"redis://{hung.address}/0"
        settings.MIRROR_REDIS_TIMEOUT = 0.5
        redisclients.forget()
        attempts._last_warning.clear()
        reserved = [attempts.begin("alice", ADDRESS) for _ in range(5)]
        assert all(isinstance(attempt, attempts.Attempt) for attempt in reserved)
        with pytest.raises(attempts.TooManyAttempts):
            attempts.begin("alice", ADDRESS)
        assert PasswordAttempts.objects.get(key=attempts.counters("alice", ADDRESS)[0].key).count == 5
        assert hung.connections >= 1, "Redis was asked first"
    finally:
        hung.stop()
        redisclients.forget()


@pytest.mark.django_db(transaction=True)
def test_with_neither_redis_nor_the_database_the_check_goes_on_uncounted(limits, settings, monkeypatch, caplog):
    """Both counters down: the password check is not refused (it fails on the database anyway),
    nothing raises, and the log says the limit is off."""
    from django.db import OperationalError

    settings.REDIS_URL = NOBODY_LISTENS
    attempts._last_warning.clear()

    def database_down(self, active, window):
        raise OperationalError("the database does not answer")

    monkeypatch.setattr(attempts.DatabaseStore, "reserve", database_down)
    attempt = attempts.begin("alice", ADDRESS)
    attempt.succeeded()  # nothing to give back, and no error
    assert isinstance(attempt, attempts.Attempt)
    assert "password attempts are not limited" in caplog.text
