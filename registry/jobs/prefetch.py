"""Prefetch: a pull with nobody waiting.

The image is fetched through the cache's own functions, as the views call them (so fills are
single-flight and digest-checked like any pull): the manifest, the chosen platforms' manifests
when it is an index, then every blob, each fill drained to its end. A PrefetchJob records the
progress. What is cached already costs no upstream GET, so a second prefetch is free.
Transient upstream errors are retried with exponential backoff; the job stops, saying why,
when the upstream's rate limit is nearly spent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
import json
import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from registry import flushing, oci
from registry.jobs.imageref import ImageRef, Platform, format_platforms, index_entries, parse_platforms, platform_of
from registry.models import Manifest, PrefetchJob, Tag
from registry.proxy import cache, pulltimes
from registry.storage.blobstore import default_store
from registry.upstreams import ratelimit

logger = logging.getLogger(__name__)

# Worth another try: the upstream unreachable or failing (UpstreamUnavailable, and a fill
# followed here that failed upstream), or rate-limiting us for now.
TRANSIENT = (oci.Unavailable, oci.TooManyRequests)
PROGRESS_SAVE_INTERVAL = 1.0  # seconds between progress writes while bytes flow
MAX_RECORDED_ERRORS = 100
# Layers clients fetch from elsewhere (Windows base layers): registries do not serve them.
FOREIGN_LAYER_MARKERS = ("foreign", "nondistributable")

ProgressCallback = Callable[[PrefetchJob], None]


class Stopped(Exception):
    """The work must stop for a reason that is not a failure (the upstream's rate limit)."""


def create_job(image: ImageRef, platforms: Iterable[Platform] = (), requested_by: str = "") -> PrefetchJob:
    return PrefetchJob.objects.create(
        upstream=image.upstream,
        repository=image.repository,
        reference=str(image.reference),
        platforms=format_platforms(platforms),
        requested_by=requested_by[:150],
    )


def enqueue(image: ImageRef, platforms: Iterable[Platform] = (), requested_by: str = "") -> PrefetchJob:
    """Record a job and hand it to a worker once the job is committed. If the broker cannot be
    reached, the job says so (failed) rather than the caller's request failing."""
    job = create_job(image, platforms, requested_by)
    transaction.on_commit(lambda: send(job), robust=True)
    return job


def send(job: PrefetchJob) -> None:
    from registry.jobs import tasks  # tasks import this module

    try:
        tasks.prefetch.delay(job.pk)
    except Exception as error:  # the broker is down: say so on the job rather than lose it silently
        logger.exception("could not enqueue prefetch job %s", job.pk)
        PrefetchJob.objects.filter(pk=job.pk).update(
            status=PrefetchJob.Status.FAILED,
            message=f"could not reach the task queue: {error}",
            finished_at=timezone.now(),
        )
        raise


def resume_stalled() -> list[int]:
    """Send again the jobs a worker took and lost (stopped or killed mid-way): queued or
    running without progress for MIRROR_PREFETCH_STALLED_AFTER. They resume where they were,
    and a job sent twice runs once."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.MIRROR_PREFETCH_STALLED_AFTER)
    resumed = []
    stalled = PrefetchJob.objects.filter(
        status__in=[PrefetchJob.Status.QUEUED, PrefetchJob.Status.RUNNING], updated_at__lt=cutoff
    )
    for job in stalled:
        # Claim it (its updated_at as seen) so two schedulers do not both send it.
        if PrefetchJob.objects.filter(pk=job.pk, updated_at=job.updated_at).update(updated_at=now):
            logger.warning(
                "prefetch %s (job %s) made no progress since %s: sending it again", job, job.pk, job.updated_at
            )
            send(job)
            resumed.append(job.pk)
    return resumed


def run(job_id: int, on_progress: ProgressCallback | None = None) -> PrefetchJob:
    """Do a job (again: a job that was interrupted resumes, only what is missing is fetched)."""
    job = PrefetchJob.objects.select_related("upstream").get(pk=job_id)
    if job.finished:
        return job  # delivered twice: it is done
    with pulltimes.uncounted():  # keeping an image ready is not a client's pull
        try:
            _Prefetch(job, on_progress).run()
        finally:
            # A worker may idle for long, and `prefetch --wait` has no flush thread: write its
            # pull times and what it downloaded now.
            flushing.flush_all()
    return job


class _Prefetch:
    def __init__(self, job: PrefetchJob, on_progress: ProgressCallback | None):
        self.job = job
        self.on_progress = on_progress
        self.upstream = job.upstream
        self.platforms = parse_platforms([job.platforms])
        self.store = default_store()
        self._finished_bytes = 0
        self._saved_at = 0.0

    # --- the job ---------------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        job.status, job.started_at, job.finished_at, job.message = PrefetchJob.Status.RUNNING, timezone.now(), None, ""
        job.blobs_done = job.bytes_done = job.bytes_downloaded = 0
        self._save(force=True)
        try:
            blobs = self._blobs(self._images())
            job.blobs_total, job.bytes_total = len(blobs), sum(blobs.values())
            self._save(force=True)
            failed = [digest for digest, size in blobs.items() if not self._blob(digest, size)]
            if failed:
                job.status, job.message = (
                    PrefetchJob.Status.FAILED,
                    f"{len(failed)} of {len(blobs)} blobs could not be fetched",
                )
            else:
                job.status = PrefetchJob.Status.SUCCEEDED
        except Stopped as stop:
            job.status, job.message = PrefetchJob.Status.STOPPED, str(stop)
        except oci.TooManyRequests as error:
            job.status = PrefetchJob.Status.STOPPED
            job.message = (
                f"upstream rate limit reached: {error.message} (tried {settings.MIRROR_PREFETCH_ATTEMPTS} times)"
            )
        except oci.RegistryError as error:
            job.status, job.message = PrefetchJob.Status.FAILED, f"{error.code}: {error.message}"
        except Exception as error:
            job.status, job.message = PrefetchJob.Status.FAILED, f"internal error: {type(error).__name__}: {error}"
            raise
        finally:  # also when the worker is stopped mid-way: the job stays running, to be resumed
            if job.finished:
                job.finished_at = timezone.now()
            self._save(force=True)
            logger.info("prefetch %s: %s %s", job, job.status, job.message)

    # --- manifests -------------------------------------------------------------------------
    def _images(self) -> list[cache.ManifestResult]:
        root = self._manifest(oci.parse_reference(self.job.reference))
        self.job.digest = root.digest
        return self._expand(root, depth=0)

    def _expand(self, result: cache.ManifestResult, depth: int) -> list[cache.ManifestResult]:
        """The image manifests under an index (the chosen platforms), or the manifest itself."""
        entries = index_entries(result.content)
        if entries is None:
            return [result]
        if depth > 1:
            return []  # an index nested deeper than one level is no image layout in use
        chosen = [
            entry
            for entry in entries
            if not self.platforms or any(p.matches(entry.get("platform")) for p in self.platforms)
        ]
        if self.platforms and not chosen:
            offered = sorted({str(platform_of(entry) or "unknown") for entry in entries})
            raise oci.ManifestUnknown(f"no manifest for {self.job.platforms} in the index; it has {', '.join(offered)}")
        images = []
        for entry in chosen:
            child = self._manifest(oci.Reference(digest=oci.parse_digest(entry["digest"])))
            images += self._expand(child, depth + 1)
        return images

    def _manifest(self, reference: oci.Reference) -> cache.ManifestResult:
        if not self._manifest_cached(reference):
            self._check_ratelimit()
        started = timezone.now()
        result = self._retry(
            f"manifest {reference}", lambda: cache.get_manifest(self.upstream, self.job.repository, reference)
        )
        if self._manifests().filter(digest=result.digest, created_at__gte=started).exists():
            self.job.manifests_fetched += 1
        return result

    def _manifest_cached(self, reference: oci.Reference) -> bool:
        # A cached tag costs at most a HEAD to revalidate, which Docker Hub does not count as a pull.
        if reference.digest is not None:
            return self._manifests().filter(digest=str(reference.digest)).exists()
        return Tag.objects.filter(
            repository__upstream=self.upstream, repository__name=self.job.repository, name=reference.tag
        ).exists()

    def _manifests(self):
        return Manifest.objects.filter(repository__upstream=self.upstream, repository__name=self.job.repository)

    # --- blobs -----------------------------------------------------------------------------
    @staticmethod
    def _blobs(images: list[cache.ManifestResult]) -> dict[str, int]:
        """digest → size of every blob of the images, once each, in manifest order."""
        blobs: dict[str, int] = {}
        for image in images:
            try:
                document = json.loads(image.content)
            except ValueError:
                continue
            descriptors = [document.get("config")] + list(document.get("layers") or [])
            for descriptor in descriptors:
                if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
                    continue
                if any(marker in str(descriptor.get("mediaType", "")) for marker in FOREIGN_LAYER_MARKERS):
                    continue
                size = descriptor.get("size")
                blobs.setdefault(descriptor["digest"], size if isinstance(size, int) and size >= 0 else 0)
        return blobs

    def _blob(self, digest: str, size: int) -> bool:
        """Fetch one blob; False (recorded on the job) when the upstream will not give it."""
        try:
            parsed = oci.parse_digest(digest)
            if self.store.size(parsed) is None:
                self._check_ratelimit()
            downloaded = self._retry(f"blob {digest}", lambda: self._drain(parsed))
        except (Stopped, *TRANSIENT):
            raise  # the upstream is out of reach or of pulls: the remaining blobs would fare no better
        except oci.RegistryError as error:
            self._record_error(f"blob {digest}", error, retried=False)
            return False
        self._finished_bytes += size
        self.job.blobs_done += 1
        self.job.bytes_done = self._finished_bytes
        self.job.bytes_downloaded += downloaded
        self._save(force=True)
        return True

    def _drain(self, digest: oci.Digest) -> int:
        """Fill the cache with one blob as a client's GET would; the bytes downloaded."""
        found = cache.fetch_blob(self.upstream, self.job.repository, digest)
        if isinstance(found, cache.CachedBlob):
            return 0
        downloaded = 0
        try:
            for chunk in found.chunks:
                downloaded += len(chunk)
                self.job.bytes_done = self._finished_bytes + downloaded
                self._save()
        finally:
            found.chunks.close()  # a broken download aborts its fill
        return downloaded

    # --- upstream weather ------------------------------------------------------------------
    def _check_ratelimit(self) -> None:
        reason = ratelimit.nearly_spent(self.upstream)
        if reason:
            raise Stopped(reason)

    def _retry(self, what: str, call):
        retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(max(settings.MIRROR_PREFETCH_ATTEMPTS, 1)),
            wait=backoff,
            before_sleep=lambda state: self._record_error(what, state.outcome.exception(), retried=True),
            reraise=True,
        )
        return retrying(call)

    # --- bookkeeping -----------------------------------------------------------------------
    def _record_error(self, what: str, error: BaseException, *, retried: bool) -> None:
        text = f"{error.code}: {error.message}" if isinstance(error, oci.RegistryError) else str(error)
        logger.warning("prefetch %s: %s: %s%s", self.job, what, text, " (retrying)" if retried else "")
        if len(self.job.errors) < MAX_RECORDED_ERRORS:
            self.job.errors.append({"at": timezone.now().isoformat(), "what": what, "error": text, "retried": retried})
        self._save(force=True)

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved_at >= PROGRESS_SAVE_INTERVAL:
            self._saved_at = now
            self.job.save()
        if self.on_progress is not None:
            self.on_progress(self.job)


def backoff(state: RetryCallState) -> float:
    """Exponential, capped; at least what a 429's Retry-After asks for."""
    delay = settings.MIRROR_PREFETCH_BACKOFF * 2 ** (state.attempt_number - 1)
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, oci.TooManyRequests) and isinstance(error.detail, dict):
        retry_after = str(error.detail.get("retry_after") or "")
        if retry_after.isdigit():
            delay = max(delay, float(retry_after))
    return min(delay, settings.MIRROR_PREFETCH_BACKOFF_MAX)
