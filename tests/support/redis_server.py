"""A Redis server of a test's own on loopback (never the machine's shared one), which the test
may stop, or freeze (SIGSTOP: a Redis that accepts connections and never answers) and thaw."""

from __future__ import annotations

from pathlib import Path
import shutil
import signal
import subprocess
import time

import redis

from tests.support.upstream_registry import free_port


class RedisServer:
    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:  # `make test` installs it; a missing server is a failure, not a skip
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> RedisServer:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                client.ping()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()  # a frozen process would not act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
