"""The project's image, built by the suite: a stand-in for `python:3.11-slim-bookworm` made from
Debian's packages (no image registry can be reached from the test machines), then the
project's own Dockerfile on top of it.

The stand-in base is `debootstrap --variant=minbase bookworm` with the packages below, packed
as a tarball under /var/cache/mirrorsite-tests/ (outside the checkout, kept between runs,
named after the package list and suite so a change makes a new one), and `docker import`ed.
pip inside the build trusts the CA bundle and uses the package index this machine's pip
uses (`pip config list`): the same build arguments a user behind a TLS-inspecting proxy or
with an internal index passes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
import shutil
import subprocess
import tempfile

from tests.support.dockerd import Dockerd
from tests.support.mirror import PROJECT_ROOT
from tests.support.mounts import unmount_all_under

CACHE_DIR = Path(os.environ.get("MIRROR_TEST_CACHE_DIR", "/var/cache/mirrorsite-tests"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "passwd", "ca-certificates")
LAYOUT = 2  # bumped when the way the tarball is made changes, so an old one is not reused
BASE_TAG = "mirrorsite-test-base:bookworm"
IMAGE_TAG = "mirrorsite:test"


def base_tarball() -> Path:
    """The stand-in base's root file system, made once per package list and kept in CACHE_DIR."""
    key = hashlib.sha256(f"{LAYOUT} {SUITE} minbase {' '.join(sorted(BASE_PACKAGES))}".encode()).hexdigest()[:16]
    tarball = CACHE_DIR / f"base-{SUITE}-{key}.tar"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:  # two runs at once make it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is missing: run `make test`, which installs it")
        root = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE_DIR))
        utab = Path("/run/mount")  # libmount's, made by debootstrap's mounts in the chroot
        had_utab = utab.exists()
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root), MIRROR],
                check=True,
                capture_output=True,
                timeout=1200,
            )
            root.chmod(0o755)  # mkdtemp's 0700 would become the image's `/`, closed to non-root users
            # What the official slim image leaves out too: package lists and caches.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(root / junk, ignore_errors=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(
                ["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True, timeout=600
            )
            partial.rename(tarball)
        finally:
            unmount_all_under(root)  # /proc and the like, should debootstrap fail with them mounted
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
            if not had_utab:
                try:
                    utab.rmdir()
                except OSError:
                    pass
    return tarball


def import_base(dockerd: Dockerd) -> str:
    """`docker import` the stand-in base, with what the official python image sets."""
    dockerd.docker(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        'CMD ["python3"]',
        str(base_tarball()),
        BASE_TAG,
        timeout=600,
    )
    return BASE_TAG


def pip_build_args() -> list[str]:
    """Build arguments that give pip in the build this machine's CA bundle and package index."""
    args: list[str] = []
    listed = subprocess.run(
        ["pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_CONFIG_FILE": ""},
    ).stdout
    config = {}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        config[name.split(".", 1)[-1]] = value.strip().strip("'")
    cert = os.environ.get("PIP_CERT") or config.get("cert")
    if cert and Path(cert).is_file():
        args += ["--secret", f"id=pip_ca,src={cert}"]
    index = os.environ.get("PIP_INDEX_URL") or config.get("index-url")
    if index and not index.startswith("file:"):  # a local directory is not inside the build
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    return args


def build_image(dockerd: Dockerd, tag: str = IMAGE_TAG) -> str:
    """Build the project's Dockerfile on the stand-in base (`--network host`: loopback only)."""
    base = import_base(dockerd)
    dockerd.docker(
        "build",
        "--progress",
        "plain",
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        *pip_build_args(),
        "-t",
        tag,
        ".",
        cwd=PROJECT_ROOT,
        timeout=1200,
        env={"DOCKER_BUILDKIT": "1"},
    )
    return tag
