"""What the mirror has cached, and where from.

Bytes of blobs live in the blob store (content-addressed files); manifests are small and
their bytes are kept here, byte for byte, so a manifest hit is one query.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils.text import slugify

from registry.destinations import DOCKER_HUB_HOSTS, default_realm_hosts

# One component of a repository name (the OCI grammar): what a path alias may be.
ALIAS_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
# A registry host as clients name it: DNS name or IPv4 address, optional port.
HOST_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::\d{1,5})?\Z")
# A host name or IPv4 address, no port: a token realm host (ports do not matter there).
REALM_HOST_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z")


def is_docker_hub(url: str) -> bool:
    return urlsplit(url).hostname in DOCKER_HUB_HOSTS


def default_hosts(url: str) -> list[str]:
    """The host names an upstream answers for unless told otherwise: its own, and Docker Hub's
    names for Docker Hub (containerd says `ns=docker.io`, not the API host)."""
    own = urlsplit(url).netloc.lower()
    if is_docker_hub(url):
        return ["docker.io"] + sorted(DOCKER_HUB_HOSTS - {"docker.io"})
    return [own] if own else []


def split_list(text: str) -> list[str]:
    """Items separated by commas, spaces or new lines."""
    return [item for item in re.split(r"[\s,]+", text or "") if item]


class Managed(models.TextChoices):
    """Where a record comes from; the environment and the file write theirs again at start-up."""

    ENVIRONMENT = "environment", "environment (REGISTRY_PROXY_*)"
    FILE = "file", "MIRROR_UPSTREAMS file"
    ADMIN = "admin", "admin"


class UpstreamManager(models.Manager["Upstream"]):
    def default(self) -> Upstream:
        """The upstream unprefixed requests go to: the one at REGISTRY_PROXY_REMOTEURL.

        Looked up by URL, so pointing the mirror at another registry starts a separate cache
        instead of serving the old registry's content under the new one's names. Created on
        first use, with the account of REGISTRY_PROXY_USERNAME (or the anonymous account).
        """
        url = settings.REGISTRY_PROXY_REMOTEURL.rstrip("/")
        library = settings.MIRROR_UPSTREAM_LIBRARY_PREFIX.lower()
        library_prefix = is_docker_hub(url) if library == "auto" else library in ("1", "true", "yes", "on")
        hosts = ", ".join(host.lower() for host in settings.MIRROR_UPSTREAM_HOSTS) or ", ".join(default_hosts(url))
        upstream = self.filter(url=url).first()
        if upstream is None:
            name = slugify(urlsplit(url).netloc.replace(".", "-").replace(":", "-")) or "upstream"
            if self.filter(name=name).exists():  # same host, other scheme or path
                name = f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
            try:
                with transaction.atomic():
                    upstream = self.create(
                        name=name, url=url, library_prefix=library_prefix, hosts=hosts, managed_by=Managed.ENVIRONMENT
                    )
            except IntegrityError:  # another process created it first
                upstream = self.get(url=url)
        elif upstream.managed_by != Managed.FILE and (upstream.library_prefix, upstream.hosts) != (
            library_prefix,
            hosts,
        ):
            # The file, when it names this URL, says these itself.
            upstream.library_prefix, upstream.hosts = library_prefix, hosts
            upstream.save(update_fields=["library_prefix", "hosts"])
        _seed_environment_account(upstream)
        return upstream


def _seed_environment_account(upstream: Upstream) -> None:
    """The account of REGISTRY_PROXY_USERNAME/PASSWORD, first in line; without one, the
    anonymous account, unless the upstream has accounts of its own (file or admin)."""
    from registry import secrets

    username, password = settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD
    accounts = UpstreamAccount.objects.filter(upstream=upstream)
    keep = None
    if username or not accounts.exclude(managed_by=Managed.ENVIRONMENT).filter(enabled=True).exists():
        keep = accounts.filter(username=username).first()
        if keep is None:
            try:
                with transaction.atomic():
                    keep = UpstreamAccount.objects.create(
                        upstream=upstream,
                        username=username,
                        position=0,
                        managed_by=Managed.ENVIRONMENT,
                        secret=secrets.encrypt(password) if username else "",
                    )
            except IntegrityError:  # another process created it first
                keep = accounts.get(username=username)
        elif username and (keep.managed_by != Managed.ENVIRONMENT or secrets.decrypt_or_none(keep.secret) != password):
            keep.managed_by = Managed.ENVIRONMENT
            keep.set_secret(password)
            keep.save(update_fields=["managed_by", "secret", "rejected_at"])
    stale = [
        account.pk
        for account in accounts.filter(managed_by=Managed.ENVIRONMENT)
        if keep is None or account.pk != keep.pk
    ]
    if stale:  # REGISTRY_PROXY_USERNAME changed: its old account goes
        UpstreamAccount.objects.filter(pk__in=stale).delete()


class Upstream(models.Model):
    """A registry the mirror pulls from, and how."""

    class StalePolicy(models.TextChoices):
        SERVE = "serve", "serve cached tags stale while the upstream fails or rate-limits"
        NEVER = "never", "never serve stale: the client gets the upstream's error"

    name = models.SlugField(max_length=64, unique=True)
    url = models.URLField(max_length=500, unique=True, help_text="Base URL, e.g. https://registry-1.docker.io")
    hosts = models.CharField(
        max_length=500,
        blank=True,
        help_text="Registry host names it answers for, comma-separated (containerd's ?ns=, e.g. docker.io, ghcr.io)",
    )
    alias = models.CharField(
        max_length=64,
        blank=True,
        help_text="Path prefix that selects it: /v2/<alias>/<repository>/... (e.g. ghcr); empty for none",
    )
    library_prefix = models.BooleanField(
        default=False, help_text="One-component names mean library/<name> (Docker Hub)."
    )
    tag_ttl = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds a tag is trusted before a HEAD revalidates it; empty: MIRROR_TAG_TTL"
    )
    stale_policy = models.CharField(max_length=10, choices=StalePolicy.choices, default=StalePolicy.SERVE)
    max_staleness = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds since the last revalidation a tag may be served stale; empty: MIRROR_TAG_MAX_STALENESS",
    )
    allow_repositories = models.TextField(
        blank=True,
        help_text="Patterns (library/*, myorg/*), one per line: only matching repositories; empty allows all",
    )
    deny_repositories = models.TextField(
        blank=True, help_text="Patterns, one per line: never these repositories (wins over allow)"
    )
    realm_hosts = models.CharField(
        max_length=500,
        blank=True,
        help_text="Other hosts whose token realm may receive this upstream's account credentials (over HTTPS only), "
        "comma-separated; empty: auth.docker.io for Docker Hub, none otherwise. The upstream's own host always may.",
    )
    tls_verify = models.BooleanField(default=True, help_text="Verify the upstream's certificate (off: insecure)")
    ca_certificates = models.TextField(
        blank=True, help_text="PEM certificates to trust for this upstream (instead of the system's)"
    )
    connect_timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds; empty: MIRROR_UPSTREAM_CONNECT_TIMEOUT"
    )
    read_timeout = models.FloatField(null=True, blank=True, help_text="Seconds; empty: MIRROR_UPSTREAM_READ_TIMEOUT")
    max_connections = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Connections each server process may have open to it; empty: MIRROR_UPSTREAM_MAX_CONNECTIONS",
    )
    managed_by = models.CharField(max_length=12, choices=Managed.choices, default=Managed.ADMIN, editable=False)
    active_account = models.ForeignKey(
        "UpstreamAccount",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The account pulls go through now",
    )
    reachable = models.BooleanField(
        null=True, editable=False, help_text="Whether the upstream answered when last asked"
    )
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    check_message = models.CharField(max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = UpstreamManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["alias"], condition=~models.Q(alias=""), name="unique_upstream_alias"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    def clean(self) -> None:
        errors = {}
        self.alias = self.alias.strip().lower()
        if self.alias and not ALIAS_RE.match(self.alias):
            errors["alias"] = "one path component: lowercase letters, digits, and . _ - between them"
        hosts = [host.lower() for host in split_list(self.hosts)]
        bad = [host for host in hosts if not HOST_RE.match(host)]
        if bad:
            errors["hosts"] = f"not a registry host name: {', '.join(bad)}"
        self.hosts = ", ".join(hosts)
        realm_hosts = [host.lower().rstrip(".") for host in split_list(self.realm_hosts)]
        bad = [host for host in realm_hosts if not REALM_HOST_RE.match(host)]
        if bad:
            errors["realm_hosts"] = f"not a host name (no scheme, port or path): {', '.join(bad)}"
        self.realm_hosts = ", ".join(realm_hosts)
        if errors:
            raise ValidationError(errors)

    def upstream_name(self, name: str) -> str:
        """The repository name as the upstream knows it."""
        if self.library_prefix and "/" not in name:
            return f"library/{name}"
        return name

    # --- its settings, falling back to the mirror's -------------------------------------------
    def host_names(self) -> list[str]:
        return [host.lower() for host in split_list(self.hosts)]

    def token_realm_hosts(self) -> list[str]:
        """The hosts besides its own whose token realm gets its accounts' credentials."""
        return [host.lower() for host in split_list(self.realm_hosts)] or default_realm_hosts(self.url)

    def tag_ttl_seconds(self) -> int:
        return settings.MIRROR_TAG_TTL if self.tag_ttl is None else self.tag_ttl

    def max_staleness_seconds(self) -> int:
        return settings.MIRROR_TAG_MAX_STALENESS if self.max_staleness is None else self.max_staleness

    @property
    def serves_stale(self) -> bool:
        return self.stale_policy != self.StalePolicy.NEVER

    def timeouts(self) -> tuple[float, float]:
        connect = settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT if self.connect_timeout is None else self.connect_timeout
        read = settings.MIRROR_UPSTREAM_READ_TIMEOUT if self.read_timeout is None else self.read_timeout
        return connect, read

    def connection_limit(self) -> int:
        return max(self.max_connections or settings.MIRROR_UPSTREAM_MAX_CONNECTIONS, 1)

    def allows(self, repository: str) -> bool:
        """Whether the allow and deny patterns let the mirror pull this repository (upstream's name)."""
        if any(fnmatch.fnmatchcase(repository, pattern) for pattern in split_list(self.deny_repositories)):
            return False
        allowed = split_list(self.allow_repositories)
        return not allowed or any(fnmatch.fnmatchcase(repository, pattern) for pattern in allowed)


class UpstreamAccount(models.Model):
    """An account the mirror authenticates to an upstream with; an empty username is the
    anonymous account. An upstream's enabled accounts are used in order, one at a time: when
    the one in use is rejected, rate-limited or nearly out of pulls, the next takes over.

    The secret is stored encrypted (registry/secrets.py) and never shown.
    """

    class Verification(models.TextChoices):
        OK = "ok"
        REJECTED = "rejected", "credentials rejected"
        UNREACHABLE = "unreachable", "upstream unreachable"
        # The upstream asked for what the mirror does not do: a token realm on a host it does
        # not trust, a redirect (the message says which); nothing was sent.
        REFUSED = "refused", "refused (untrusted realm or redirect)"
        ERROR = "error"

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="accounts")
    username = models.CharField(max_length=200, blank=True, help_text="Empty: anonymous")
    secret = models.TextField(blank=True, editable=False, help_text="Password or access token, encrypted")
    position = models.PositiveIntegerField(default=0, help_text="Accounts are used in this order (lowest first)")
    enabled = models.BooleanField(default=True)
    managed_by = models.CharField(max_length=12, choices=Managed.choices, default=Managed.ADMIN, editable=False)
    ratelimit_limit = models.IntegerField(null=True, blank=True)
    ratelimit_remaining = models.IntegerField(null=True, blank=True)
    ratelimit_window = models.IntegerField(null=True, blank=True, help_text="Seconds")
    ratelimit_seen_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="The upstream rejected its credentials (until verified again)"
    )
    cooldown_until = models.DateTimeField(null=True, blank=True, editable=False, help_text="Rate-limited (429) until")
    verification = models.CharField(max_length=12, choices=Verification.choices, blank=True, editable=False)
    verification_message = models.CharField(max_length=300, blank=True, editable=False)
    verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    requests_made = models.BigIntegerField(default=0, editable=False, help_text="Upstream requests made with it")
    pulls_made = models.BigIntegerField(
        default=0, editable=False, help_text="Manifest GETs (what Docker Hub counts as pulls)"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["upstream", "position", "pk"]
        constraints = [models.UniqueConstraint(fields=["upstream", "username"], name="unique_account")]

    def __str__(self) -> str:
        return f"{self.label} @ {self.upstream.name}"

    @property
    def label(self) -> str:
        return self.username or "anonymous"

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)

    def set_secret(self, plain: str) -> None:
        """Store a new secret (encrypted); a rejection of the old one no longer holds."""
        from registry import secrets

        self.secret = secrets.encrypt(plain) if plain else ""
        self.rejected_at = None

    def get_secret(self) -> str:
        from registry import secrets

        return secrets.decrypt(self.secret) if self.secret else ""


class AccountSwitch(models.Model):
    """The mirror moved an upstream's pulls from one account to another, and why."""

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="account_switches")
    from_account = models.ForeignKey(
        UpstreamAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_account = models.ForeignKey(UpstreamAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    from_label = models.CharField(max_length=200, blank=True)
    to_label = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=300)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "account switches"

    def __str__(self) -> str:
        return f"{self.upstream.name}: {self.from_label or '-'} → {self.to_label or '-'}"


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
    # The descriptor's size: a fill of this blob through this manifest's repository is cut there.
    size = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["manifest", "digest", "kind"], name="unique_manifest_reference")]


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
    # Where its bytes first came from, and whether that repository was served only to the
    # mirror's account: such bytes reach another repository's clients only if they may read
    # this one, or once that repository's upstream has delivered them itself.
    origin = models.ForeignKey(
        "Repository",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The repository its bytes were first downloaded through",
    )
    origin_private = models.BooleanField(
        default=True, help_text="That repository was not public (unknown counts as not public)"
    )

    def __str__(self) -> str:
        return self.digest


class RepositoryBlob(models.Model):
    """The upstream has shown that this repository contains this blob (a manifest of it lists
    the blob, or the upstream answered a HEAD or GET of it there).

    A cached blob is served for a repository only through such a link, so bytes fetched for
    one repository never leak through another name; a link that is only a claim (not
    `delivered`) serves a blob from a private origin only to clients who may read that origin.
    """

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="blob_links")
    digest = models.CharField(max_length=200)
    delivered = models.BooleanField(
        default=False, help_text="The upstream sent the blob's verified bytes for this repository"
    )

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
