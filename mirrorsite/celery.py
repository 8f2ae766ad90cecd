"""The Celery application: workers run what nobody is waiting for."""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mirrorsite.settings")

app = Celery("mirrorsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["registry.jobs"])  # registry's tasks live in its jobs floor


@worker_process_init.connect
def _start_flushing(**_) -> None:
    """Each worker process flushes its buffers (statistics, audit records...) from threads."""
    from registry import flushing

    flushing.start()


@worker_process_shutdown.connect
def _flush_at_exit(**_) -> None:
    from registry import flushing

    flushing.flush_all()
