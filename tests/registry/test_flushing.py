"""Buffers written in batches: one flush thread per buffer and process, and a flush of all at exit."""

from __future__ import annotations

import logging
import threading

import pytest

from registry import flushing


@pytest.fixture
def buffers(monkeypatch) -> dict:
    """A registry of this test's own buffers (the project's stay as they are)."""
    registered: dict = {}
    monkeypatch.setattr(flushing, "_buffers", registered)
    monkeypatch.setattr(flushing, "_started_in", set())
    return registered


def test_every_project_buffer_is_flushed_at_exit():
    assert {"statistics", "pull times", "account use", "audit log"} <= set(flushing._buffers)


def test_one_failing_flush_does_not_stop_the_others(buffers, caplog):
    flushed = []

    def broken() -> None:
        raise RuntimeError("database is down")

    flushing.register("broken", broken)
    flushing.register("working", lambda: flushed.append("working"))
    with caplog.at_level(logging.ERROR, logger="registry.flushing"):
        flushing.flush_all()
    assert flushed == ["working"]
    assert "flushing broken failed" in caplog.text


def test_a_thread_flushes_each_buffer_with_an_interval_once_per_process(buffers, settings):
    settings.TEST_FLUSH_INTERVAL = 0.05
    settings.TEST_NO_INTERVAL = 0
    ran = threading.Event()
    calls = []

    def flush_once() -> None:
        calls.append(threading.current_thread().name)
        ran.set()
        threading.Event().wait()  # then park this (daemon) thread for good: one call is all we watch

    flushing.register("timed", flush_once, "TEST_FLUSH_INTERVAL")
    flushing.register("exit-only", lambda: calls.append("exit-only"), "TEST_NO_INTERVAL")
    before = {thread.name for thread in threading.enumerate()}
    flushing.start()
    flushing.start()  # a second start in the same process starts nothing more
    assert ran.wait(timeout=10)
    assert calls == ["flush-timed"]
    assert "flush-exit-only" not in {thread.name for thread in threading.enumerate()} - before
