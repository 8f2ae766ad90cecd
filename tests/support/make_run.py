"""`make run` started as a user starts it (its own process group, like a terminal's job)."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import time

import requests

from tests.support.databases import ProcessDatabase
from tests.support.mirror import PROJECT_ROOT
from tests.support.upstream_registry import free_port

# Settings of the machine's environment that would turn the embedded default into something else
# (on the PostgreSQL pass the database is the run's own, see tests/support/databases.py).
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "MIRROR_EMBEDDED_WORKERS")


class MakeRun:
    def __init__(self, workdir: Path, upstream):
        self.data_dir = workdir / "fresh-data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "make-run.log"
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k not in NOT_INHERITED}
        self.database = ProcessDatabase(self.data_dir)
        if self.database.postgres:
            self.env.update(self.database.env())
        self.env.update(
            MIRROR_DATA_DIR=str(self.data_dir),
            REGISTRY_HTTP_ADDR=f"127.0.0.1:{self.port}",
            REGISTRY_PROXY_REMOTEURL=upstream.url,
            REGISTRY_PROXY_USERNAME=upstream.username,
            REGISTRY_PROXY_PASSWORD=upstream.password,
            MIRROR_UPSTREAM_LIBRARY_PREFIX="true",
        )
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> MakeRun:
        self.database.create()
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                ["make", "run"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.group_alive():
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait_until_serving(self, timeout: float = 120) -> requests.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"make run exited early:\n{self.log.read_text()}"
            try:
                return requests.get(f"{self.url}/v2/", timeout=1)
            except requests.RequestException:
                time.sleep(0.3)
        raise AssertionError(f"make run did not start serving:\n{self.log.read_text()}")

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def wait_until_all_stopped(self, timeout: float = 60) -> bool:
        """Whether every process `make run` started is gone within `timeout` seconds."""
        self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.group_alive()
