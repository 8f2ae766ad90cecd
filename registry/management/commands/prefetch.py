"""`manage.py prefetch <image> [--platform ...] [--wait]`: cache an image before anyone pulls it."""

from __future__ import annotations

import getpass
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from registry.jobs import prefetch, tasks
from registry.jobs.gc import format_bytes
from registry.jobs.imageref import ImageRefInvalid, parse_image, parse_platforms
from registry.models import PrefetchJob, Upstream

POLL_INTERVAL = 0.5
EXIT_STOPPED = 3  # the upstream's rate limit stopped the job: not a failure, try again later


class ProgressBar:
    """A job's bytes as a tqdm bar, its blobs in the postfix."""

    def __init__(self, job: PrefetchJob, file):
        self.bar = tqdm(desc=str(job), unit="B", unit_scale=True, file=file, mininterval=0.2, dynamic_ncols=True)

    def update(self, job: PrefetchJob) -> None:
        if job.bytes_total and self.bar.total != job.bytes_total:
            self.bar.total = job.bytes_total
        self.bar.set_postfix_str(f"{job.status}, blobs {job.blobs_done}/{job.blobs_total}", refresh=False)
        self.bar.update(job.bytes_done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class Command(BaseCommand):
    help = (
        "Cache an image (its index, the chosen platforms and all their blobs) before anyone pulls it. "
        "Enqueues a job for a worker and follows its progress; --wait runs it in this process."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "image", help="[registry/]name[:tag|@digest], e.g. postgres:17 or library/postgres@sha256:..."
        )
        parser.add_argument(
            "--platform",
            action="append",
            default=[],
            help="os/architecture[/variant] to fetch from an index, repeatable or comma-separated (default: all)",
        )
        parser.add_argument("--wait", action="store_true", help="run the prefetch here instead of in a worker")
        parser.add_argument("--detach", action="store_true", help="enqueue and return without following the job")
        parser.add_argument("--upstream", help="name of the upstream (default: REGISTRY_PROXY_REMOTEURL's)")

    def handle(self, *args, **options) -> None:
        upstream = None
        if options["upstream"]:
            upstream = Upstream.objects.filter(name=options["upstream"]).first()
            if upstream is None:
                raise CommandError(f"no upstream named {options['upstream']!r}")
        try:
            image = parse_image(options["image"], upstream)
            platforms = parse_platforms(options["platform"])
        except ImageRefInvalid as error:
            raise CommandError(str(error)) from None
        requested_by = f"{getpass.getuser()} (manage.py prefetch)"

        if options["wait"]:
            job = prefetch.create_job(image, platforms, requested_by)
            bar = ProgressBar(job, self.stderr._out)
            try:
                with logging_redirect_tqdm():  # log lines above the bar, not through it
                    job = prefetch.run(job.pk, on_progress=bar.update)
            finally:
                bar.close()
        else:
            job = tasks.enqueue_prefetch(image, platforms, requested_by)
            self.stdout.write(f"queued prefetch job {job.pk} for {image}")
            if options["detach"]:
                return
            job = self.follow(job)
            if job is None:
                return
        self.report(job)

    def follow(self, job: PrefetchJob) -> PrefetchJob | None:
        bar = ProgressBar(job, self.stderr._out)
        try:
            while not job.finished:
                time.sleep(POLL_INTERVAL)
                job.refresh_from_db()
                bar.update(job)
        except KeyboardInterrupt:
            bar.close()
            self.stdout.write(f"job {job.pk} goes on in the worker ({job.status}); see it in the admin")
            return None
        bar.close()
        return job

    def report(self, job: PrefetchJob) -> None:
        for error in job.errors:
            self.stderr.write(f"  {error['what']}: {error['error']}{' (retried)' if error.get('retried') else ''}")
        summary = (
            f"job {job.pk} {job.status}: {job}{' (' + job.digest + ')' if job.digest else ''}, "
            f"{job.blobs_done}/{job.blobs_total} blobs, {format_bytes(job.bytes_done)} of {format_bytes(job.bytes_total)} "
            f"({format_bytes(job.bytes_downloaded)} from the upstream), {job.manifests_fetched} manifests fetched"
        )
        if job.status == PrefetchJob.Status.SUCCEEDED:
            self.stdout.write(summary)
        elif job.status == PrefetchJob.Status.STOPPED:
            raise CommandError(f"{summary}\n{job.message}", returncode=EXIT_STOPPED)
        else:
            raise CommandError(f"{summary}\n{job.message}")
