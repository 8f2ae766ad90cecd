"""One row per manifest request a client made (and per blob read, if MIRROR_AUDIT_BLOBS is on):
the audit log of pulls."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class PullRecord(models.Model):
    class Kind(models.TextChoices):
        MANIFEST = "manifest"
        BLOB = "blob"

    class Outcome(models.TextChoices):
        HIT = "hit", "hit (from the cache)"
        MISS = "miss", "miss (fetched from the upstream)"
        STALE = "stale", "stale (upstream unavailable)"
        DENIED = "denied", "denied (401/403)"
        NOT_FOUND = "not_found", "not found (404)"
        ERROR = "error", "error"

    at = models.DateTimeField(db_index=True, help_text="When the request was answered.")
    # The client's account, if it authenticated; the name stays when the account is deleted.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,  # records are written in batches: a user deleted meanwhile is not an error
    )
    username = models.CharField(max_length=150, blank=True, db_index=True)
    client_address = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    user_agent = models.CharField(max_length=255, blank=True)
    method = models.CharField(max_length=8)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.MANIFEST, db_index=True)
    # Names, not foreign keys: the log outlives evicted repositories and deleted upstreams.
    upstream = models.CharField(max_length=100, blank=True, db_index=True)
    repository = models.CharField(max_length=255, blank=True, db_index=True)
    reference = models.CharField(max_length=255, blank=True, help_text="The tag or digest asked for.")
    digest = models.CharField(
        max_length=100, blank=True, db_index=True, help_text="The manifest or blob digest served."
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    status = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "pull record"

    def __str__(self) -> str:
        who = self.username or (str(self.client_address) if self.client_address else "unknown client")
        return f"{who} {self.method} {self.repository}:{self.reference} ({self.outcome})"
