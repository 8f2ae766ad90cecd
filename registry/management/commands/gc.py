"""`manage.py gc [--dry-run]`: evict what the policies say, delete unreferenced blobs and dead fills."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from registry.jobs import gc


class Command(BaseCommand):
    help = (
        "Garbage-collect the cache: evict images not pulled for MIRROR_CACHE_TTL, keep the store under "
        "MIRROR_CACHE_MAX_BYTES, delete unreferenced blobs and leftover temporary files. Pins are respected."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would go and how much it frees; change nothing"
        )

    def handle(self, *args, **options) -> None:
        dry_run = options["dry_run"]
        try:
            plan, run = gc.collect(dry_run=dry_run, trigger="command")
        except gc.GcBusy as busy:
            raise CommandError(str(busy)) from None
        for line in plan.lines(dry_run=dry_run):
            self.stdout.write(line)
        if run is not None:
            self.stdout.write(
                f"freed {gc.format_bytes(run.bytes_freed + run.temp_bytes_freed)}: {run.blobs_deleted} blobs, "
                f"{run.manifests_deleted} manifests, {run.tags_deleted} tags, {run.repositories_deleted} repositories, "
                f"{run.temp_files_deleted} temporary files; store now {gc.format_bytes(run.store_bytes_after)}"
            )
