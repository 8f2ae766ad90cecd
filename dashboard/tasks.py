"""Celery tasks of the statistics: flush on a schedule, roll up hourly buckets into daily ones.

Worker processes flush their own recorded statistics from a thread (started when the process
starts) and once more when they stop.
"""
from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown

from . import stats, store


@shared_task(name="dashboard.flush_stats")
def flush_stats() -> str:
    stats.flush()
    stats.flush_shared()
    return "flushed"


@shared_task(name="dashboard.roll_up_stats")
def roll_up_stats() -> str:
    moved = store.roll_up()
    store.prune()
    return f"rolled up {moved} hourly buckets"


@worker_process_init.connect
def _start_flushing(**_) -> None:
    stats.start_flusher()


@worker_process_shutdown.connect
def _flush_at_exit(**_) -> None:
    stats.flush()
