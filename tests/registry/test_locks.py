"""Named locks on both backends: flock files (embedded default) and Redis."""

import threading
import uuid

import pytest

from registry import redisclients
from registry.storage import locks

REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own on the machine's Redis


@pytest.fixture(params=["files", "redis"])
def backend(request, settings, tmp_path):
    settings.MIRROR_DATA_DIR = tmp_path
    if request.param == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis
        settings.REDIS_URL = REDIS_URL
        redisclients.forget()
        yield "redis"
        redisclients.forget()
    else:
        settings.REDIS_URL = ""
        yield "files"


def unique(name: str) -> str:
    """Lock names of this test run only: nothing left in Redis by another run interferes."""
    return f"{name}-{uuid.uuid4().hex}"


def test_one_owner_at_a_time_then_the_next(backend):
    name = unique("fill:x")
    first, second = locks.named_lock(name), locks.named_lock(name)
    assert first.try_acquire()
    assert not second.try_acquire()
    other = locks.named_lock(unique("fill:other"))
    assert other.try_acquire(), "names are independent"
    other.release()
    first.release()
    assert second.try_acquire()
    second.release()


def test_exclusive_across_threads(backend):
    inside, overlaps = [], []
    name = unique("tag:x")

    def work():
        lock = locks.acquire(name, timeout=30)
        try:
            if inside:
                overlaps.append(True)
            inside.append(True)
            threading.Event().wait(0.01)
            inside.pop()
        finally:
            lock.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []


def test_a_lock_taken_in_one_thread_is_renewed_and_released_by_another(backend, monkeypatch):
    """A fill's lock is taken by the request's thread and held by the fill's own thread."""
    name = unique("fill:handed-over")
    lock = locks.named_lock(name)
    assert lock.try_acquire()
    outcome = []

    def fill_thread():
        renewing = getattr(lock, "shared", lock)  # with Redis: its Redis lock
        monkeypatch.setattr(renewing, "_renewed", float("-inf"), raising=False)  # renewal due, as in a long fill
        try:
            lock.keep_alive()
            lock.release()
            outcome.append("released")
        except Exception as error:
            outcome.append(repr(error))

    thread = threading.Thread(target=fill_thread)
    thread.start()
    thread.join()
    assert outcome == ["released"]
    again = locks.named_lock(name)
    assert again.try_acquire(), "free for the next fill at once, not when the lock expires"
    again.release()


def test_acquire_gives_up_after_its_timeout(backend):
    name = unique("busy")
    holder = locks.named_lock(name)
    assert holder.try_acquire()
    try:
        with pytest.raises(locks.LockTimeout):
            locks.acquire(name, timeout=0.1)
    finally:
        holder.release()


def test_abandoned_lock_files_are_removed_but_held_ones_kept(settings, tmp_path):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REDIS_URL = ""
    held = locks.named_lock("held")
    assert held.try_acquire()
    abandoned = locks.named_lock("abandoned")
    assert abandoned.try_acquire()
    abandoned._fd and __import__("os").close(abandoned._fd)  # its owner died: the file stays
    directory = tmp_path / "tmp" / "locks"
    assert len(list(directory.glob("*.lock"))) == 2
    assert locks.remove_abandoned_lock_files(directory, older_than=0) == 1
    assert [p.name for p in directory.glob("*.lock")] == [held.path.name]
    assert not locks.named_lock("held").try_acquire(), "the holder still holds it"
    held.release()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # a file lock lives as long as its process
def test_a_redis_lock_lives_for_the_configured_ttl(backend, settings):
    settings.MIRROR_LOCK_TTL = 7.0
    name = unique("fill:ttl")
    lock = locks.named_lock(name)
    assert lock.try_acquire()
    ttl_ms = redisclients.client(settings.REDIS_URL).pttl(f"{settings.MIRROR_REDIS_KEY_PREFIX}mirrorsite:lock:{name}")
    lock.release()
    assert 0 < ttl_ms <= 7000


# --- Redis unavailable: single flight falls back to this machine's file locks ------------------
@pytest.fixture
def redis_down(settings, tmp_path):
    """REDIS_URL names a Redis nobody answers on (stopped)."""
    from tests.support.upstream_registry import free_port

    settings.MIRROR_DATA_DIR = tmp_path
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redisclients.forget()
    yield settings.REDIS_URL
    redisclients.forget()


@pytest.fixture
def redis_hung(settings, tmp_path):
    """REDIS_URL names a server that accepts and never answers (Redis frozen)."""
    from tests.support.tcp_relay import TcpRelay

    relay = TcpRelay().start()
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REDIS_URL = f"redis://{relay.address}/0"
    settings.MIRROR_REDIS_TIMEOUT = 0.5
    redisclients.forget()
    yield relay
    redisclients.forget()
    relay.stop()


def test_with_redis_stopped_locks_still_exclude_on_this_machine(redis_down):
    name = unique("fill:down")
    first, second = locks.named_lock(name), locks.named_lock(name)
    assert first.try_acquire(), "Redis down is no reason to refuse the fill"
    assert not second.try_acquire(), "still one owner at a time"
    first.keep_alive()  # nothing to renew in Redis: no error
    first.release()
    assert second.try_acquire()
    second.release()
    assert redisclients.breaker(redis_down).is_down()


def test_with_redis_hung_a_lock_is_taken_after_one_timeout_then_at_once(redis_hung):
    lock = locks.acquire(unique("tag:hung"), timeout=30)
    lock.release()
    assert redis_hung.connections == 1
    for _ in range(5):
        locks.acquire(unique("tag:hung"), timeout=30).release()
    assert redis_hung.connections == 1, "known down: the following locks do not wait on Redis"


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # only Redis can go away
def test_a_lock_held_through_redis_still_excludes_once_redis_is_gone(backend, settings):
    name = unique("fill:across-outage")
    holder = locks.named_lock(name)
    assert holder.try_acquire()
    try:
        from tests.support.upstream_registry import free_port

        settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis gone for newcomers
        assert not locks.named_lock(name).try_acquire(), "the owner on this machine still owns it"
    finally:
        settings.REDIS_URL = REDIS_URL
        holder.release()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # only Redis can go away
def test_a_lock_taken_while_redis_was_down_still_excludes_once_it_is_back(backend, settings):
    from tests.support.upstream_registry import free_port

    name = unique("fill:after-outage")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    holder = locks.named_lock(name)
    assert holder.try_acquire()
    try:
        settings.REDIS_URL = REDIS_URL  # back
        assert not locks.named_lock(name).try_acquire(), "taken on this machine while Redis was down"
    finally:
        holder.release()
    again = locks.named_lock(name)
    assert again.try_acquire()
    again.release()
