"""What the mirror has cached, and where from.

Bytes of blobs live in the blob store (content-addressed files); manifests are small and
their bytes are kept here, byte for byte, so a manifest hit is one query.
"""
from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils.text import slugify

DOCKER_HUB_HOSTS = {"registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com"}


class UpstreamManager(models.Manager["Upstream"]):
    def default(self) -> "Upstream":
        """The upstream unprefixed requests go to: the one at REGISTRY_PROXY_REMOTEURL.

        Looked up by URL, so pointing the mirror at another registry starts a separate cache
        instead of serving the old registry's content under the new one's names.
        """
        url = settings.REGISTRY_PROXY_REMOTEURL.rstrip("/")
        library = settings.MIRROR_UPSTREAM_LIBRARY_PREFIX.lower()
        library_prefix = (
            urlsplit(url).hostname in DOCKER_HUB_HOSTS if library == "auto" else library in ("1", "true", "yes", "on")
        )
        upstream = self.filter(url=url).first()
        if upstream is None:
            name = slugify(urlsplit(url).netloc.replace(".", "-").replace(":", "-")) or "upstream"
            if self.filter(name=name).exists():  # same host, other scheme or path
                name = f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
            try:
                with transaction.atomic():
                    upstream = self.create(name=name, url=url, library_prefix=library_prefix)
            except IntegrityError:  # another process created it first
                upstream = self.get(url=url)
        elif upstream.library_prefix != library_prefix:
            upstream.library_prefix = library_prefix
            upstream.save(update_fields=["library_prefix"])
        # An empty username is the anonymous account: its rate limit is worth watching too.
        UpstreamAccount.objects.get_or_create(upstream=upstream, username=settings.REGISTRY_PROXY_USERNAME)
        return upstream


class Upstream(models.Model):
    """A registry the mirror pulls from."""

    name = models.SlugField(max_length=64, unique=True)
    url = models.URLField(max_length=500, unique=True, help_text="Base URL, e.g. https://registry-1.docker.io")
    library_prefix = models.BooleanField(
        default=False, help_text="One-component names mean library/<name> (Docker Hub)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = UpstreamManager()

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    def upstream_name(self, name: str) -> str:
        """The repository name as the upstream knows it."""
        if self.library_prefix and "/" not in name:
            return f"library/{name}"
        return name


class UpstreamAccount(models.Model):
    """An account the mirror authenticates to an upstream with.

    The secret of the account configured through REGISTRY_PROXY_PASSWORD stays in the
    environment; only what the dashboard shows is stored.
    """

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="accounts")
    username = models.CharField(max_length=200)
    ratelimit_limit = models.IntegerField(null=True, blank=True)
    ratelimit_remaining = models.IntegerField(null=True, blank=True)
    ratelimit_window = models.IntegerField(null=True, blank=True, help_text="Seconds")
    ratelimit_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["upstream", "username"], name="unique_account")]

    def __str__(self) -> str:
        return f"{self.username} @ {self.upstream.name}"


class Repository(models.Model):
    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="repositories")
    name = models.CharField(max_length=255, help_text="As the upstream knows it, e.g. library/alpine")
    created_at = models.DateTimeField(auto_now_add=True)
    last_pulled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "repositories"
        constraints = [models.UniqueConstraint(fields=["upstream", "name"], name="unique_repository")]

    def __str__(self) -> str:
        return self.name


class Manifest(models.Model):
    """A manifest or index as the upstream served it, for one repository."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="manifests")
    digest = models.CharField(max_length=200)
    media_type = models.CharField(max_length=200)
    content = models.BinaryField()
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    last_pulled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="unique_manifest")]

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


class ManifestReference(models.Model):
    """A blob or child manifest a manifest points at: what eviction must keep together."""

    class Kind(models.TextChoices):
        BLOB = "blob"
        MANIFEST = "manifest"

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="references")
    digest = models.CharField(max_length=200, db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["manifest", "digest", "kind"], name="unique_manifest_reference")
        ]


class Tag(models.Model):
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="tags")
    validated_at = models.DateTimeField(help_text="Last time the upstream confirmed the digest")
    last_pulled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "name"], name="unique_tag")]

    def __str__(self) -> str:
        return f"{self.repository}:{self.name}"


class Blob(models.Model):
    """A blob whose verified bytes are in the blob store (stored once, whatever the repository)."""

    digest = models.CharField(max_length=200, unique=True)
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    last_pulled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.digest


class RepositoryBlob(models.Model):
    """The upstream has shown that this repository contains this blob.

    A cached blob is served for a repository only through such a link, so bytes fetched for
    one repository (perhaps a private one) never leak through another name.
    """

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="blob_links")
    digest = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="unique_repository_blob")]


class TagPullCount(models.Model):
    """How often a tag was pulled on one day: which tags are popular enough to keep fresh.

    Counted in memory and written with the buffered last-pulled times (pulltimes.flush).
    """

    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="pull_counts")
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tag", "day"], name="unique_tag_pull_count")]
        indexes = [models.Index(fields=["day"])]


class Pin(models.Model):
    """An image garbage collection never evicts: a tag, a digest, or (empty reference) a whole repository.

    Kept by name, so an image can be pinned before it is cached, and a pinned tag keeps
    whatever it points at after it moves.
    """

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="pins")
    repository = models.CharField(max_length=255, help_text="As the upstream knows it, e.g. library/postgres")
    reference = models.CharField(max_length=200, blank=True, help_text="Tag or digest; empty pins every tag and digest")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["upstream", "repository", "reference"], name="unique_pin")]

    def __str__(self) -> str:
        if not self.reference:
            return self.repository
        separator = "@" if ":" in self.reference else ":"
        return f"{self.repository}{separator}{self.reference}"


class PrefetchJob(models.Model):
    """A request to have an image cached before anyone pulls it, and how far it got."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        STOPPED = "stopped", "stopped (upstream rate limit)"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.STOPPED)

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="prefetch_jobs")
    repository = models.CharField(max_length=255, help_text="As the upstream knows it, e.g. library/postgres")
    reference = models.CharField(max_length=200, help_text="Tag or digest")
    platforms = models.CharField(
        max_length=500, blank=True, help_text="Comma-separated os/architecture[/variant]; empty means all"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    message = models.TextField(blank=True, help_text="Why it stopped or failed")
    errors = models.JSONField(default=list, blank=True, help_text="Upstream errors met, retried or not")
    digest = models.CharField(max_length=200, blank=True, help_text="What the reference resolved to")
    manifests_fetched = models.PositiveIntegerField(default=0, help_text="Manifests fetched from the upstream")
    blobs_total = models.PositiveIntegerField(default=0)
    blobs_done = models.PositiveIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    bytes_downloaded = models.BigIntegerField(default=0, help_text="Of bytes done, those fetched from the upstream")
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        separator = "@" if ":" in self.reference else ":"
        return f"{self.repository}{separator}{self.reference}"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED


class GcRun(models.Model):
    """What one garbage collection deleted and freed (dry runs are not recorded)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    trigger = models.CharField(max_length=50, help_text="schedule, command, admin")
    store_bytes_before = models.BigIntegerField(default=0)
    store_bytes_after = models.BigIntegerField(default=0)
    manifests_deleted = models.PositiveIntegerField(default=0)
    tags_deleted = models.PositiveIntegerField(default=0)
    repositories_deleted = models.PositiveIntegerField(default=0)
    blobs_deleted = models.PositiveIntegerField(default=0)
    bytes_freed = models.BigIntegerField(default=0, help_text="Blob bytes deleted")
    temp_files_deleted = models.PositiveIntegerField(default=0)
    temp_bytes_freed = models.BigIntegerField(default=0)
    evicted = models.JSONField(default=list, blank=True, help_text="Images evicted, with the reason")

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "garbage collection run"

    def __str__(self) -> str:
        return f"GC {self.started_at:%Y-%m-%d %H:%M}"
