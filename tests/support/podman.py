"""podman as root, with no systemd and no Docker engine, isolated from the host's
configuration and state: its own storage (`--root`), run directory (`--runroot`, a short
path: sockets and locks live there), libpod temp and network directories, configuration
files and policy under one temporary directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import tempfile

from tests.support.egress import clean_environ
from tests.support.mounts import unmount_all_under

# Overlay works for root on this machine's kernel and file system; vfs would copy whole layers.
STORAGE_DRIVER = "overlay"


def podman_binary() -> str:
    binary = shutil.which("podman")
    if binary is None:  # `make test` installs it; a missing client is a failure, not a skip
        raise RuntimeError("podman is not installed: run `make test`, which installs it")
    return binary


class Podman:
    def __init__(self, registries_conf: str, *, extra_env: dict[str, str] | None = None):
        self.binary = podman_binary()
        # /tmp/mpd-XXXXXXXX: short, whatever TMPDIR or pytest's basetemp are.
        self.workdir = Path(tempfile.mkdtemp(prefix="mpd-", dir="/tmp"))
        w = self.workdir
        self.root, self.runroot = w / "root", w / "run"
        for d in (self.root, self.runroot, w / "tmp", w / "net", w / "home"):
            d.mkdir()
        self.registries_conf = w / "registries.conf"
        self.registries_conf.write_text(registries_conf)
        (w / "storage.conf").write_text(
            f'[storage]\ndriver = "{STORAGE_DRIVER}"\nrunroot = "{self.runroot}"\ngraphroot = "{self.root}"\n'
        )
        (w / "containers.conf").write_text(
            '[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n\n'
            # CNI keeps its state under --network-config-dir; netavark would use /run/containers.
            '[network]\nnetwork_backend = "cni"\n'
        )
        (w / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        (w / "auth.json").write_text(json.dumps({"auths": {}}))  # no credentials: the mirror needs none
        self.env = clean_environ(dict(os.environ))
        self.env.update(
            HOME=str(w / "home"),
            XDG_CONFIG_HOME=str(w / "home" / ".config"),
            XDG_RUNTIME_DIR=str(self.runroot),
            TMPDIR=str(w / "tmp"),  # image downloads are staged here
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
            CONTAINERS_STORAGE_CONF=str(w / "storage.conf"),
            CONTAINERS_CONF=str(w / "containers.conf"),
            REGISTRY_AUTH_FILE=str(w / "auth.json"),
        )
        self.env.update(extra_env or {})
        self.global_args = [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--tmpdir",
            str(self.runroot / "libpod"),
            "--network-config-dir",
            str(w / "net"),
            "--storage-driver",
            STORAGE_DRIVER,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *self.global_args, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def pull(self, reference: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        policy = str(self.workdir / "policy.json")
        return self.run("pull", "--signature-policy", policy, *extra, reference, check=check)

    def inspect(self, reference: str) -> dict:
        [image] = json.loads(self.run("image", "inspect", reference).stdout)
        return image

    def version(self) -> str:
        return self.run("version", "--format", "{{.Client.Version}}").stdout.strip()

    def cleanup(self) -> None:
        # The overlay driver bind-mounts its own directory (`root/overlay`) and leaves it
        # mounted when podman exits: reset, then unmount whatever is still under the workdir.
        self.run("system", "reset", "--force", check=False, timeout=60)
        unmount_all_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
