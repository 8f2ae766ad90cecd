"""A real Celery worker process of the mirror (`celery -A mirrorsite worker`), and the Redis
the end-to-end tests use as its broker."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.support.mirror import PROJECT_ROOT

REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own on the machine's Redis


def redis_broker() -> tuple[str, str]:
    """(broker URL, key prefix unique to this test session). The machine's Redis must answer:
    a missing Redis is a failure, never a skip."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis is not answering at {REDIS_URL}: {error}")
    return REDIS_URL, f"mirrorsite-test-{uuid.uuid4().hex[:12]}:"


def forget_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


class CeleryWorker:
    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2):
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> CeleryWorker:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "mirrorsite",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(self.concurrency),
                    "--hostname",
                    f"test-{uuid.uuid4().hex[:8]}@%h",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.process.returncode}:\n{self.log()}")
            if " ready." in self.log()[offset:]:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"celery worker did not get ready:\n{self.log()}")

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
