"""Celery tasks: thin wrappers, the work is in prefetch, popular and gc."""

from __future__ import annotations

import logging

from celery import shared_task

from registry.jobs import gc, popular
from registry.jobs import prefetch as prefetching
from registry.upstreams import verification

logger = logging.getLogger(__name__)


# Acknowledged when done: a prefetch cut short by a worker's death is delivered again and
# resumes (what is cached is not fetched twice).
@shared_task(name="registry.prefetch", acks_late=True, reject_on_worker_lost=True)
def prefetch(job_id: int) -> str:
    return prefetching.run(job_id).status


@shared_task(name="registry.resume_stalled_prefetches")
def resume_stalled_prefetches() -> list[int]:
    return prefetching.resume_stalled()


@shared_task(name="registry.refresh_popular")
def refresh_popular() -> str:
    return str(popular.refresh_popular())


@shared_task(name="registry.collect_garbage")
def collect_garbage(trigger: str = "schedule") -> str:
    try:
        _, run = gc.collect(trigger=trigger)
    except gc.GcBusy as busy:
        logger.info("gc skipped: %s", busy)
        return str(busy)
    return f"freed {gc.format_bytes(run.bytes_freed + run.temp_bytes_freed)}, store now {gc.format_bytes(run.store_bytes_after)}"


@shared_task(name="registry.verify_accounts")
def verify_accounts() -> str:
    return verification.verify_all()
