"""Mounts a client left behind in its temporary directory (podman's overlay driver
bind-mounts its own directory; containerd's snapshotter mounts while unpacking)."""

from __future__ import annotations

from pathlib import Path
import subprocess


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory`, deepest first (from /proc/self/mountinfo)."""
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return sorted((p for p in points if (p + "/").startswith(prefix)), key=len, reverse=True)


def unmount_all_under(directory: Path) -> None:
    for mount_point in mounts_under(directory):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
