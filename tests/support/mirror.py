"""The mirror as a real server process (`manage.py serve`: migrate, then gunicorn)."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import requests

from tests.support.databases import ProcessDatabase
from tests.support.upstream_registry import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MirrorProcess:
    """`database`: by default the data directory's own (see tests/support/databases.py); give
    several processes the same one to have them share it."""

    def __init__(
        self,
        data_dir: Path,
        upstream_url: str,
        *,
        username: str = "",
        password: str = "",
        database: ProcessDatabase | None = None,
        **env: str,
    ):
        self.data_dir = Path(data_dir)
        self.database = database or ProcessDatabase(self.data_dir)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-mirror-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.env.update(
            MIRROR_DATA_DIR=str(self.data_dir),
            REGISTRY_HTTP_ADDR=self.host,
            REGISTRY_PROXY_REMOTEURL=upstream_url,
            REGISTRY_PROXY_USERNAME=username,
            REGISTRY_PROXY_PASSWORD=password,
            MIRROR_UPSTREAM_LIBRARY_PREFIX="true",
            # The upstream stands in for Docker Hub: containerd's hosts.toml for docker.io says ns=docker.io.
            MIRROR_UPSTREAM_HOSTS=f"docker.io,{urlsplit(upstream_url).netloc}",
            MIRROR_PULL_TIME_FLUSH_INTERVAL="0",
            MIRROR_WEB_WORKERS="2",
            DJANGO_SETTINGS_MODULE="mirrorsite.settings",
        )
        self.env.update(self.database.env())
        # Given Redis or a broker, the mirror is a deployment and wants a shared secret key.
        self.env.setdefault("DJANGO_SECRET_KEY", "mirrorsite-tests-only-" + "k" * 40)
        self.env.update(env)
        self.process: subprocess.Popen | None = None
        # Served over HTTPS when given a certificate: readiness is checked against this CA.
        self.verify: str | bool = True
        if env.get("REGISTRY_HTTP_TLS_CERTIFICATE"):
            self.url = f"https://{self.host}"

    def start(self, timeout: float = 60) -> MirrorProcess:
        return self.launch().wait_until_serving(timeout)

    def launch(self) -> MirrorProcess:
        """Start the process without waiting for it (replicas started together)."""
        self.database.create()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_until_serving(self, timeout: float = 60) -> MirrorProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mirror exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # 401: client authentication is on (MIRROR_AUTH); the mirror serves all the same.
                if requests.get(f"{self.url}/v2/", timeout=1, verify=self.verify).status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mirror did not start:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return self.process.returncode

    def manage(self, *args: str) -> str:
        """Run a management command on this mirror's data, with its environment."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stderr}")
        return done.stdout

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def query(self, sql: str, *params) -> list[tuple]:
        """Run SQL (`?` placeholders) in the mirror's own database (what it recorded)."""
        return self.database.query(sql, *params)

    def stored_blobs(self) -> dict[str, Path]:
        """digest → path of every committed blob in the mirror's store."""
        root = self.data_dir / "blobs"
        return {f"{p.parent.parent.name}:{p.name}": p for p in root.glob("*/*/*") if p.is_file()}

    def temp_files(self) -> list[Path]:
        """Partial blobs (fills in progress or abandoned); fill records and locks excluded."""
        return [p for p in (self.data_dir / "tmp").glob("*.partial") if p.is_file()]
