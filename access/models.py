"""Who may pull what: access rules by repository pattern, and what the upstream tells anonymous
clients about each repository (its visibility)."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import models

from registry.models import Upstream


class Policy(models.TextChoices):
    PUBLIC = "public", "public: anyone the allowed networks admit"
    AUTHENTICATED = "authenticated", "authenticated: any user of the mirror"
    GROUPS = "groups", "restricted: members of the groups below"


class AccessRule(models.Model):
    """Repositories matching `pattern` (of `upstream`, or of any) are pulled under `policy`.

    Rules are tried by position (lowest first); the first that matches decides.
    """

    position = models.PositiveIntegerField(
        default=0, db_index=True, help_text="Rules are tried in this order (lowest first)"
    )
    pattern = models.CharField(
        max_length=255,
        help_text="Glob over the repository name as the upstream knows it: library/*, myorg/*, * (every repository)",
    )
    upstream = models.ForeignKey(
        Upstream,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="access_rules",
        help_text="Only this upstream's repositories; empty: every upstream",
    )
    policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.AUTHENTICATED)
    groups = models.ManyToManyField(Group, blank=True, related_name="access_rules", help_text="For a restricted rule")
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        where = f"{self.upstream.name}: " if self.upstream_id else ""
        return f"{where}{self.pattern} → {self.policy}"


class RepositoryVisibility(models.Model):
    """Whether the upstream lets anyone pull a repository without the mirror's credentials.

    Recorded by asking the upstream anonymously; a repository it serves only to the mirror's
    account is private, and is not served to anonymous clients unless a rule says public.
    """

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="+")
    repository = models.CharField(max_length=255, help_text="As the upstream knows it")
    public = models.BooleanField(help_text="The upstream grants anonymous pulls")
    checked_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "repository visibilities"
        constraints = [models.UniqueConstraint(fields=["upstream", "repository"], name="unique_repository_visibility")]

    def __str__(self) -> str:
        return f"{self.repository}: {'public' if self.public else 'private'}"


class PasswordAttempts(models.Model):
    """Password checks counted against one user name or one client address (access.attempts),
    when no Redis is configured or it does not answer. `key` is a hash, never the raw input."""

    key = models.CharField(max_length=80, unique=True)
    count = models.PositiveIntegerField(default=0)
    window_ends = models.DateTimeField(help_text="The count starts again from zero after this")

    class Meta:
        verbose_name_plural = "password attempts"
