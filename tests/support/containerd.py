"""A containerd daemon of the tests' own, and its `ctr` client.

Root, state, socket and configuration live under one short temporary directory (a unix
socket path must stay under 108 bytes); the CRI plugin is disabled (no Kubernetes here), so
is everything that would reach outside that directory (the `opt` plugin's /opt/containerd,
debug and metrics listeners). Content is isolated per namespace, so a pull in a fresh
namespace downloads every blob again: each test uses its own namespace.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import signal
import subprocess
import tempfile
import time
from typing import NamedTuple

from tests.support.egress import clean_environ
from tests.support.mounts import unmount_all_under

# overlayfs works for root on this machine; `native` (plain copies) would do elsewhere.
SNAPSHOTTER = "overlayfs"


def binaries() -> tuple[str, str]:
    containerd, ctr = shutil.which("containerd"), shutil.which("ctr")
    if containerd is None or ctr is None:  # `make test` installs them; missing is a failure, not a skip
        raise RuntimeError("containerd is not installed: run `make test`, which installs it")
    return containerd, ctr


class ImageRow(NamedTuple):
    name: str
    media_type: str
    digest: str


class CheckRow(NamedTuple):
    name: str
    digest: str
    status: str  # e.g. "complete (2/2)"
    unpacked: str  # "true" / "false"


class Containerd:
    def __init__(self) -> None:
        self.containerd, self.ctr_binary = binaries()
        self.workdir = Path(tempfile.mkdtemp(prefix="mcd-", dir="/tmp"))
        w = self.workdir
        self.socket = w / "c.sock"
        self.config = w / "config.toml"
        self.log_path = w / "containerd.log"
        self.config.write_text(
            f"""version = 2
root = "{w / "root"}"
state = "{w / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{w / "opt"}"

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
"""
        )
        self.env = clean_environ(dict(os.environ))
        self.env["HOME"] = str(w)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> Containerd:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.containerd, "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.ctr("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"containerd did not start:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def cleanup(self) -> None:
        self.stop()
        unmount_all_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ ctr
    def ctr(
        self,
        *args: str,
        namespace: str = "default",
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.ctr_binary, "--address", str(self.socket), "--namespace", namespace, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ctr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\ncontainerd log:\n{self.log_tail()}"
            )
        return proc

    def version(self) -> str:
        out = self.ctr("version").stdout
        server = out.split("Server:", 1)[1]
        return next(line.split(":", 1)[1].strip() for line in server.splitlines() if "Version:" in line)

    def images(self, namespace: str) -> dict[str, ImageRow]:
        """`ctr images ls`: name → (media type, digest)."""
        rows = self.ctr("images", "ls", namespace=namespace).stdout.splitlines()[1:]
        found = {}
        for row in rows:
            cols = row.split()
            if len(cols) >= 3:
                found[cols[0]] = ImageRow(cols[0], cols[1], cols[2])
        return found

    def check(self, namespace: str, name: str) -> CheckRow:
        """`ctr images check name==<name>`: are all of the image's blobs in the content store."""
        lines = self.ctr("images", "check", f"name=={name}", namespace=namespace).stdout.splitlines()[1:]
        [row] = [line for line in lines if line.split() and line.split()[0] == name]
        cols = row.split()
        # REF TYPE DIGEST STATUS (two words) SIZE (one or two words) UNPACKED
        return CheckRow(cols[0], cols[2], f"{cols[3]} {cols[4]}", cols[-1])

    def content(self, namespace: str, digest: str) -> bytes | None:
        """The bytes of one blob in the namespace's content store, None if it is not there."""
        proc = subprocess.run(
            [self.ctr_binary, "--address", str(self.socket), "--namespace", namespace, "content", "get", digest],
            env=self.env,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        return proc.stdout if proc.returncode == 0 else None


def write_hosts_dir(directory: Path, registry: str, hosts_toml: str) -> Path:
    """`<directory>/<registry>/hosts.toml`, the layout `--hosts-dir` and CRI's `config_path` read."""
    (directory / registry).mkdir(parents=True, exist_ok=True)
    (directory / registry / "hosts.toml").write_text(hosts_toml)
    return directory
