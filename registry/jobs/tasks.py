"""Celery tasks: thin wrappers, the work is in prefetch, popular and gc. Prefetch jobs are sent
to the workers from here (`enqueue_prefetch`, `send_prefetch`): the jobs do the work and never
import this module."""

from __future__ import annotations

from collections.abc import Iterable
import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from registry.jobs import gc, popular
from registry.jobs import prefetch as prefetching
from registry.jobs.imageref import ImageRef, Platform
from registry.models import PrefetchJob
from registry.upstreams import verification

logger = logging.getLogger(__name__)


# Acknowledged when done: a prefetch cut short by a worker's death is delivered again and
# resumes (what is cached is not fetched twice).
@shared_task(name="registry.prefetch", acks_late=True, reject_on_worker_lost=True)
def prefetch(job_id: int) -> str:
    return prefetching.run(job_id).status


@shared_task(name="registry.resume_stalled_prefetches")
def resume_stalled_prefetches() -> list[int]:
    """Send again the jobs a worker took and lost (prefetch.claim_stalled)."""
    resumed = []
    for job in prefetching.claim_stalled():
        send_prefetch(job)
        resumed.append(job.pk)
    return resumed


def enqueue_prefetch(image: ImageRef, platforms: Iterable[Platform] = (), requested_by: str = "") -> PrefetchJob:
    """Record a job and hand it to a worker once the job is committed. If the broker cannot be
    reached, the job says so (failed) rather than the caller's request failing."""
    job = prefetching.create_job(image, platforms, requested_by)
    transaction.on_commit(lambda: send_prefetch(job), robust=True)
    return job


def send_prefetch(job: PrefetchJob) -> None:
    try:
        prefetch.delay(job.pk)
    except Exception as error:  # the broker is down: say so on the job rather than lose it silently
        logger.exception("could not enqueue prefetch job %s", job.pk)
        PrefetchJob.objects.filter(pk=job.pk).update(
            status=PrefetchJob.Status.FAILED,
            message=f"could not reach the task queue: {error}",
            finished_at=timezone.now(),
        )
        raise


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
