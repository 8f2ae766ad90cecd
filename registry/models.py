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
