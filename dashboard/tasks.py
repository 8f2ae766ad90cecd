"""Celery tasks of the statistics: flush on a schedule, roll up hourly buckets into daily ones.

Worker processes flush their own recorded statistics from a thread (started when the process
starts) and once more when they stop (mirrorsite.celery).
"""

from __future__ import annotations

from celery import shared_task

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
