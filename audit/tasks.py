"""Celery tasks of the audit log (the beat schedule is in settings)."""

from __future__ import annotations

from celery import shared_task

from . import retention


@shared_task(name="audit.prune")
def prune_audit_log() -> str:
    return f"deleted {retention.prune()} audit records past retention"
