"""A Docker daemon (Debian's `docker.io`, 20.10) of the tests' own, and its `docker` client.

Everything dockerd keeps lives under one short temporary directory (the unix socket path
must stay under 108 bytes): data root, exec root (and the containerd it starts there),
socket, pid file and configuration. The configuration sets `deprecated-key-path` inside that
directory, or dockerd 20.10 writes `/etc/docker/key.json`. No bridge, no iptables: containers
run with `--network host` only, so every address the tests use stays on 127.0.0.1 (which
dockerd always treats as an insecure registry). Several daemons can run at once.

The client is Debian's `/usr/bin/docker`, named by path: another (newer) client earlier on
PATH would negotiate a different API and behave differently. Non-loopback traffic of the
daemon goes to the egress trap given to it, so a pull that falls back to Docker Hub is seen.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

from tests.support.egress import clean_environ
from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    Blob,
    Platform,
    PushedImage,
    canonical_json,
    sha256_digest,
)
from tests.support.mounts import unmount_all_under

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
# overlay2 works for root on this machine's kernel and file system; vfs works anywhere but
# copies every layer whole (the image's build writes gigabytes with it).
STORAGE_DRIVER = os.environ.get("MIRROR_TEST_DOCKER_STORAGE_DRIVER", "overlay2")

# What dockerd 20.10 and its containerd and runc make outside the directories they are given,
# whatever the flags: plugin discovery, the shims' sockets, runc's state (and libmount's, made
# by the `umount` of the cleanup). Each is an empty directory once the daemons are gone; those
# made while daemons of ours ran are removed when the last of ours stops (others' daemons may
# share them while they run).
HOST_DIRS = (
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
    Path("/run/runc"),
    Path("/run/mount"),
)
_running: list[Dockerd] = []
_made_by_us: set[Path] = set()


def running_daemons() -> list[Dockerd]:
    return list(_running)


def made_by_us() -> set[Path]:
    """The directories of HOST_DIRS that were not there when the first daemon of ours started."""
    return set(_made_by_us)


def require_binaries() -> None:
    for binary in (DOCKERD, DOCKER):
        if not os.access(binary, os.X_OK):  # `make test` installs docker.io; missing is a failure, not a skip
            raise RuntimeError(f"{binary} is missing: run `make test`, which installs docker.io")


class Dockerd:
    """`daemon_json`: the daemon configuration a user would write (registry-mirrors...); the
    keys that keep dockerd inside its directory are added to it."""

    def __init__(self, daemon_json: str | dict = "{}", *, extra_env: dict[str, str] | None = None):
        require_binaries()
        self.workdir = Path(tempfile.mkdtemp(prefix="mdk-", dir="/tmp"))
        w = self.workdir
        self.data_root, self.exec_root = w / "data", w / "exec"
        self.socket = w / "docker.sock"
        self.pidfile = w / "docker.pid"
        self.config_path = w / "daemon.json"
        self.log_path = w / "dockerd.log"
        self.client_config = w / "client"  # DOCKER_CONFIG: `docker login` stores credentials here
        self.client_config.mkdir()
        self.write_config(daemon_json)
        self.env = clean_environ(dict(os.environ))
        self.env.update(HOME=str(w), **(extra_env or {}))
        self.client_env = clean_environ(dict(os.environ))
        self.client_env.update(
            HOME=str(w),
            DOCKER_HOST=f"unix://{self.socket}",
            DOCKER_CONFIG=str(self.client_config),
            DOCKER_BUILDKIT="0",
        )
        self.process: subprocess.Popen | None = None

    def write_config(self, daemon_json: str | dict) -> None:
        config = json.loads(daemon_json) if isinstance(daemon_json, str) else dict(daemon_json)
        config["deprecated-key-path"] = str(self.workdir / "key.json")
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = 30) -> Dockerd:
        if not _running:
            _made_by_us.update(d for d in HOST_DIRS if not d.exists())
        _running.append(self)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                DOCKERD,
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--storage-driver={STORAGE_DRIVER}",
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.exec_root),
                "-H",
                f"unix://{self.socket}",
                "--pidfile",
                str(self.pidfile),
                "--config-file",
                str(self.config_path),
            ],
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
                raise RuntimeError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.1)
        self.cleanup()
        raise RuntimeError(f"dockerd did not start:\n{self.log_tail()}")

    def reload(self, daemon_json: str | dict) -> None:
        """Write a new configuration and send SIGHUP, as `systemctl reload docker` does."""
        mark = self.log_text().count("Reloaded configuration")
        self.write_config(daemon_json)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while self.log_text().count("Reloaded configuration") <= mark:
            if time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not reload:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # The containerd dockerd started for itself, should it outlive the daemon.
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass

    def cleanup(self) -> None:
        self.stop()
        unmount_all_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self in _running:
            _running.remove(self)
        if not _running:
            for directory in HOST_DIRS:  # deepest first
                if directory in _made_by_us:
                    try:
                        directory.rmdir()  # only if empty
                        _made_by_us.discard(directory)
                    except OSError:
                        pass

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------ the client
    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [DOCKER, *args],
            env={**self.client_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            cwd=cwd,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"dockerd log:\n{self.log_tail()}"
            )
        return proc

    def pull(self, reference: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.docker("pull", *extra, reference, check=check)

    def inspect(self, reference: str) -> dict:
        [image] = json.loads(self.docker("image", "inspect", reference).stdout)
        return image

    def repo_digests(self, reference: str) -> list[str]:
        return self.inspect(reference)["RepoDigests"]

    def remove_all_images(self) -> None:
        self.remove_all_images_but()

    def remove_all_images_but(self, *kept: str) -> None:
        """Remove every image but those named (and what they are built from)."""
        keep = {self.inspect(name)["Id"] for name in kept}
        for name in kept:
            keep.update(self.docker("history", "-q", "--no-trunc", name).stdout.split())
        ids = set(self.docker("images", "-aq", "--no-trunc").stdout.split()) - keep
        if ids:
            self.docker("rmi", "-f", *sorted(ids), check=False)

    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()


BUSYBOX = "/bin/busybox"  # Debian's busybox-static: one static binary, a whole userland


def busybox_image(repository: str, tag: str, message: str) -> PushedImage:
    """A runnable image (not yet pushed): one layer with a static busybox, printing `message`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1704067200
            tar.addfile(info)
        binary = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(binary), 0o755, 1704067200
        tar.addfile(info, io.BytesIO(binary))
        # The message makes each such image's layer its own (no blob shared with another test's).
        text = message.encode() + b"\n"
        info = tarfile.TarInfo("message")
        info.size, info.mode, info.mtime = len(text), 0o644, 1704067200
        tar.addfile(info, io.BytesIO(text))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "busybox", 1704067200
        tar.addfile(link)
    raw_bytes = raw.getvalue()
    layer_bytes = gzip.compress(raw_bytes, mtime=0)
    layer = Blob(
        sha256_digest(layer_bytes), len(layer_bytes), layer_bytes, DOCKER_LAYER, diff_id=sha256_digest(raw_bytes)
    )
    config_bytes = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "echo", message]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "busybox-static"}],
        }
    )
    config = Blob(sha256_digest(config_bytes), len(config_bytes), config_bytes, DOCKER_CONFIG)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
            "layers": [{"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}],
        },
        indent=3,
    ).encode()
    return PushedImage(
        repository, tag, sha256_digest(manifest), manifest, DOCKER_MANIFEST, config, [layer], Platform("linux", "amd64")
    )
