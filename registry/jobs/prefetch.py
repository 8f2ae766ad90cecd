"""Prefetch: a pull with nobody waiting.

The image is fetched through the cache's own functions, as the views call them (so fills are
single-flight and digest-checked like any pull): the manifest, the chosen platforms' manifests
when it is an index, then every blob, each fill drained to its end. A PrefetchJob records the
progress. What is cached already costs no upstream GET, so a second prefetch is free.
Transient upstream errors are retried with exponential backoff; the job stops, saying why,
when the upstream's rate limit is nearly spent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
import logging
import time

from django.conf import settings
from django.utils import timezone
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from registry import flushing, oci
from registry.jobs.imageref import ImageRef, Platform, format_platforms, parse_platforms, platform_of
from registry.models import Manifest, PrefetchJob, Tag
from registry.proxy import blobs, manifests, pulltimes
from registry.storage import default_store
from registry.upstreams import ratelimit
from registry.upstreams.routing import Route

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


def claim_stalled() -> Iterator[PrefetchJob]:
    """The jobs a worker took and lost (stopped or killed mid-way): queued or running without
    progress for MIRROR_PREFETCH_STALLED_AFTER. Each is claimed as it is yielded, for its caller
    to send again (tasks.resume_stalled_prefetches); they resume where they were, and a job
    sent twice runs once."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.MIRROR_PREFETCH_STALLED_AFTER)
    stalled = PrefetchJob.objects.filter(
        status__in=[PrefetchJob.Status.QUEUED, PrefetchJob.Status.RUNNING], updated_at__lt=cutoff
    )
    for job in stalled:
        # Claim it (its updated_at as seen) so two schedulers do not both send it.
        if PrefetchJob.objects.filter(pk=job.pk, updated_at=job.updated_at).update(updated_at=now):
            logger.warning(
                "prefetch %s (job %s) made no progress since %s: sending it again", job, job.pk, job.updated_at
            )
            yield job


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
        # Checked once for the job (the name valid, the upstream's patterns allowing it) by the
        # first manifest asked.
        self.route = Route(job.upstream, job.repository)
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
            wanted = self._blobs(self._images())
            job.blobs_total, job.bytes_total = len(wanted), sum(wanted.values())
            self._save(force=True)
            failed = [digest for digest, size in wanted.items() if not self._blob(digest, size)]
            if failed:
                job.status, job.message = (
                    PrefetchJob.Status.FAILED,
                    f"{len(failed)} of {len(wanted)} blobs could not be fetched",
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
    def _images(self) -> list[oci.ManifestDocument]:
        root = self._manifest(oci.parse_reference(self.job.reference))
        self.job.digest = root.digest
        return self._expand(root, depth=0)

    def _expand(self, result: manifests.ManifestResult, depth: int) -> list[oci.ManifestDocument]:
        """The image manifests under an index (the chosen platforms), or the manifest itself;
        each parsed once (by its fill, or here)."""
        document = result.document
        entries = document.index_entries()
        if entries is None:
            return [document]
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

    def _manifest(self, reference: oci.Reference) -> manifests.ManifestResult:
        if not self._manifest_cached(reference):
            self._check_ratelimit()
        started = timezone.now()
        result = self._retry(f"manifest {reference}", lambda: manifests.get_manifest(self.route, reference))
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
    def _blobs(images: list[oci.ManifestDocument]) -> dict[str, int]:
        """digest → size of every blob of the images, once each, in manifest order."""
        found: dict[str, int] = {}
        for image in images:
            for descriptor in image.blob_descriptors():
                if not isinstance(descriptor.get("digest"), str):
                    continue
                if any(marker in str(descriptor.get("mediaType", "")) for marker in FOREIGN_LAYER_MARKERS):
                    continue
                size = descriptor.get("size")
                found.setdefault(descriptor["digest"], size if isinstance(size, int) and size >= 0 else 0)
        return found

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
        found = blobs.fetch_blob(self.route, digest)
        if isinstance(found, blobs.CachedBlob):
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
