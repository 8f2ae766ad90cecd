"""How long the audit log is kept: records older than MIRROR_AUDIT_RETENTION_DAYS go."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .models import PullRecord


def prune(now: datetime | None = None) -> int:
    """Delete the records past the retention period (none when it is 0); returns how many."""
    days = settings.MIRROR_AUDIT_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = PullRecord.objects.filter(at__lt=cutoff).delete()
    return deleted
