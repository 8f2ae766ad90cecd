"""The write buffers' one policy: cheap appends, written only by the flush thread or at exit,
bounded (drops counted and logged once per flush), put back on a failed write, never raising."""

from __future__ import annotations

import logging
import threading

import pytest

from registry import flushing
from registry.buffers import Records, Tally, WriteBuffer


@pytest.fixture(autouse=True)
def own_buffers(monkeypatch) -> dict:
    """This test's buffers register apart from the project's."""
    registered: dict = {}
    monkeypatch.setattr(flushing, "_buffers", registered)
    monkeypatch.setattr(flushing, "_started_in", set())
    return registered


class Database:
    """Where a test buffer writes: a list of batches, or an error while it is down."""

    def __init__(self) -> None:
        self.batches: list = []
        self.down = False
        self.writers: list[str] = []  # the thread of each write

    def write(self, batch) -> None:
        self.writers.append(threading.current_thread().name)
        if self.down:
            raise RuntimeError("database is down")
        self.batches.append(batch)


def records_buffer(database: Database, max_pending: int = 100, **options) -> WriteBuffer[Records]:
    return WriteBuffer(
        "test records",
        empty=Records,
        write=database.write,
        interval_setting=options.pop("interval_setting", None),
        max_pending=max_pending,
        what="records",
        **options,
    )


def tally_buffer(database: Database, max_pending: int = 100) -> WriteBuffer[Tally[str]]:
    return WriteBuffer("test tally", empty=Tally, write=database.write, interval_setting=None, max_pending=max_pending)


def count(buffer: WriteBuffer[Tally[str]], key: str, **amounts: int) -> None:
    buffer.add(lambda tally: tally.add(key, **amounts), key)


def test_adding_never_writes():
    database = Database()
    buffer = records_buffer(database)
    for n in range(10):
        buffer.add(lambda records, n=n: records.append(n))
    assert database.writers == [], "appends stay in memory until a flush"
    assert buffer.flush() == 10
    assert database.batches == [list(range(10))]
    assert buffer.flush() == 0 and len(database.batches) == 1, "an empty buffer writes nothing"


def test_past_the_bound_new_entries_are_dropped_and_logged_once_per_flush(caplog):
    database = Database()
    buffer = records_buffer(database, max_pending=3)
    for n in range(1000):
        buffer.add(lambda records, n=n: records.append(n))
    with caplog.at_level(logging.WARNING, logger="registry.buffers"):
        assert buffer.flush() == 3
    assert database.batches == [[0, 1, 2]], "the oldest are kept"
    assert [r.getMessage() for r in caplog.records] == ["test records: 997 records dropped (the buffer was full)"]


def test_a_full_tally_still_adds_to_the_keys_it_holds():
    database = Database()
    buffer = tally_buffer(database, max_pending=2)
    for key in ("a", "b", "c", "a", "b", "d"):
        count(buffer, key, pulls=1)
    taken, dropped = buffer.take()
    assert dict(taken) == {"a": {"pulls": 2}, "b": {"pulls": 2}}
    assert dropped == 2, "c and d were new keys past the bound"


def test_a_failed_write_puts_back_what_it_took_for_the_next_flush(caplog):
    database = Database()
    buffer = records_buffer(database)
    buffer.add(lambda records: records.append("old"))
    database.down = True
    with caplog.at_level(logging.WARNING, logger="registry.buffers"):
        assert buffer.flush() == 0, "logged, not raised"
    assert "could not save 1 records of the test records (database is down); keeping them" in caplog.text
    buffer.add(lambda records: records.append("new"))
    database.down = False
    assert buffer.flush() == 2
    assert database.batches == [["old", "new"]], "kept in order, the oldest first"


def test_what_is_put_back_stays_within_the_bound():
    buffer: WriteBuffer[Records]

    def failing_while_a_request_adds(batch) -> None:
        buffer.add(lambda records: records.append("since"))  # a request, during the write
        raise RuntimeError("database is down")

    buffer = WriteBuffer(
        "test records", empty=Records, write=failing_while_a_request_adds, interval_setting=None, max_pending=3
    )
    for n in range(3):
        buffer.add(lambda records, n=n: records.append(n))
    assert buffer.flush() == 0
    taken, dropped = buffer.take()
    assert list(taken) == [0, 1, "since"], "what came since stays, the taken fill the room left, oldest first"
    assert dropped == 1


def test_tally_put_back_adds_up_and_keeps_to_the_bound():
    database = Database()
    buffer = tally_buffer(database, max_pending=2)
    count(buffer, "a", requests=2)
    database.down = True
    buffer.flush()
    count(buffer, "a", requests=1)
    count(buffer, "b", requests=1)
    database.down = False
    assert buffer.flush() == 2
    assert dict(database.batches[0]) == {"a": {"requests": 3}, "b": {"requests": 1}}


def test_a_failing_change_is_logged_never_raised(caplog):
    buffer = records_buffer(Database())

    def broken(records) -> None:
        raise RuntimeError("a bug in recording")

    with caplog.at_level(logging.ERROR, logger="registry.buffers"):
        buffer.add(broken)
    assert "could not buffer an entry for the test records" in caplog.text


def test_the_exit_flush_writes_everything_even_after_a_failure():
    database = Database()
    buffer = records_buffer(database)
    buffer.add(lambda records: records.append(1))
    database.down = True
    flushing.flush_all()  # a flush thread's failed write
    database.down = False
    buffer.add(lambda records: records.append(2))
    flushing.flush_all()  # what gunicorn's worker_exit and Celery's worker shutdown call
    assert database.batches == [[1, 2]]
    assert buffer.take() == ([], 0)


def test_the_flush_thread_writes_at_its_interval(settings):
    settings.TEST_BUFFER_INTERVAL = 0.05
    database = Database()
    buffer = records_buffer(database, interval_setting="TEST_BUFFER_INTERVAL")
    written = threading.Event()

    def write_once(batch) -> None:
        database.write(batch)
        written.set()
        threading.Event().wait()  # then park this (daemon) thread for good: one write is all we watch

    buffer._write = write_once
    buffer.add(lambda records: records.append("x"))
    flushing.start()
    assert written.wait(timeout=10)
    assert database.batches == [["x"]]
    assert database.writers == ["flush-test records"], "written by the buffer's thread, not by whoever added"


def test_at_once_when_zero_the_thread_is_woken_by_each_add(settings):
    settings.TEST_BUFFER_INTERVAL = 0
    database = Database()
    written = threading.Event()

    def write(batch) -> None:
        database.write(batch)
        written.set()
        threading.Event().wait()  # then park this (daemon) thread for good: one write is all we watch

    buffer = WriteBuffer(
        "test at once",
        empty=Records,
        write=write,
        interval_setting="TEST_BUFFER_INTERVAL",
        max_pending=10,
        at_once_when_zero=True,
    )
    flushing.start()
    assert database.writers == []
    buffer.add(lambda records: records.append("now"))
    assert written.wait(timeout=10)
    assert database.batches == [["now"]]
    assert database.writers == ["flush-test at once"]


def test_without_at_once_an_interval_of_zero_writes_only_at_exit(settings):
    settings.TEST_BUFFER_INTERVAL = 0
    database = Database()
    buffer = records_buffer(database, interval_setting="TEST_BUFFER_INTERVAL")
    before = {thread.name for thread in threading.enumerate()}
    flushing.start()
    buffer.add(lambda records: records.append("later"))
    assert "flush-test records" not in {thread.name for thread in threading.enumerate()} - before
    flushing.flush_all()
    assert database.batches == [["later"]]
