"""`manage.py serve`: migrate, apply MIRROR_UPSTREAMS, then run the mirror's server in the
foreground, verifying the upstream accounts beside it (an unreachable upstream never delays
or stops the start; a file that cannot be applied does stop it, with the reason).

With no broker configured (the embedded default) it also runs a Celery worker and the beat
scheduler, on the broker that needs no server (files under MIRROR_DATA_DIR), so prefetch,
refresh and garbage collection work without Redis. With a broker configured, workers and
beat run as processes of their own (see docker-compose.yml); MIRROR_EMBEDDED_WORKERS
overrides either way. Without embedded workers the launcher becomes gunicorn (exec), so the
web server is all that runs.

SIGINT or SIGTERM stops everything it started; the children also die with this process
(PR_SET_PDEATHSIG), so a killed launcher leaves nothing behind. A prefetch still running
when the worker is stopped is resumed later (tasks.resume_stalled_prefetches), fetching only what is
missing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from registry import startup
from registry.models import Upstream
from registry.upstreams import configfile as upstreamconfig
from registry.upstreams import verification

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def embedded_workers() -> bool:
    choice = settings.MIRROR_EMBEDDED_WORKERS
    if choice == "auto":
        return not settings.MIRROR_BROKER_CONFIGURED
    return choice in ("1", "true", "yes", "on")


def celery_commands() -> list[list[str]]:
    """The embedded worker and beat."""
    celery = [sys.executable, "-m", "celery", "-A", "mirrorsite"]
    worker = celery + [
        "worker",
        "--loglevel",
        settings.LOG_LEVEL,
        "--concurrency",
        str(settings.MIRROR_WORKER_CONCURRENCY),
        "--hostname",
        "embedded@%h",
        # One worker on one machine: nothing to synchronise with or to watch over the broker.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return [worker, celery + ["beat", "--loglevel", settings.LOG_LEVEL]]


def _verify_accounts() -> None:
    try:
        verification.verify_all()
    except Exception:  # reported on the accounts when it works; never a reason to stop
        logger.exception("start-up verification of upstream accounts failed")
    finally:
        connection.close()


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the signal forwarding below still applies
        pass


class Command(BaseCommand):
    help = "Migrate the database and serve the mirror (web server, embedded workers) until SIGINT/SIGTERM."

    def handle(self, *args, **options) -> None:
        with startup.one_process_at_a_time():  # replicas starting together take turns
            call_command("migrate", interactive=False, verbosity=0)
            if settings.MIRROR_UPSTREAMS:  # a broken file is a configuration error: say so, do not start
                try:
                    upstreamconfig.apply_file(settings.MIRROR_UPSTREAMS)
                except upstreamconfig.ConfigError as error:
                    raise CommandError(f"MIRROR_UPSTREAMS: {error}") from None
            upstream = Upstream.objects.default()
        self.stdout.write(
            f"Mirrorsite on http://{settings.REGISTRY_HTTP_ADDR} mirroring {upstream.url}; "
            f"data in {settings.MIRROR_DATA_DIR}"
        )
        for other in Upstream.objects.exclude(pk=upstream.pk).order_by("name"):
            routes = ", ".join(filter(None, [other.hosts, f"/v2/{other.alias}/" if other.alias else ""]))
            self.stdout.write(f"  and {other.url} ({routes or 'no route: give it hosts or an alias'})")
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:mirrorsite.gunicorn_conf"]
        if not embedded_workers():
            # Only the web server to run: hand this process over to it, so the launcher's
            # Django does not sit idle beside it (about 90 MB); gunicorn takes the signals.
            # The accounts are verified by a short-lived process beside the server.
            subprocess.Popen([sys.executable, "manage.py", "verify_accounts"], cwd=settings.BASE_DIR)
            connection.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, gunicorn)
        # Verify the accounts beside the server: an unreachable upstream never delays serving.
        threading.Thread(target=_verify_accounts, name="verify-accounts", daemon=True).start()
        commands = [gunicorn]
        if embedded_workers():
            commands += celery_commands()
            self.stdout.write("with an embedded Celery worker and beat scheduler")
        children = [subprocess.Popen(command, preexec_fn=_die_with_parent) for command in commands]
        stopping = False

        def stop(signum: int, frame) -> None:
            nonlocal stopping
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        asked_to_stop = stopping
        stop(signal.SIGTERM, None)  # one child died on its own: take the others down too
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if not asked_to_stop:
            self.stderr.write("a server process exited on its own; stopped the others")
            sys.exit(1)
