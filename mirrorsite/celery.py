"""The Celery application: workers run what nobody is waiting for."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mirrorsite.settings")

app = Celery("mirrorsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
