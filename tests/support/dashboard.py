"""The dashboard of a mirror process, as a staff user sees it: a user and API token in the
mirror's own database, the statistics API, /metrics, and plain pulls with known outcomes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import subprocess
import sys
import time
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families
import requests

from tests.support.images import PushedImage
from tests.support.mirror import PROJECT_ROOT, MirrorProcess

T = TypeVar("T")
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

CREATE_STAFF = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
user = User.objects.create_superuser({username!r}, "{username}@example.com", {password!r})
print(Token.objects.create(user=user).key)
"""


def create_staff(mirror: MirrorProcess, username: str = "admin", password: str = "dashboard-e2e-password") -> str:
    """A superuser in the mirror's database; returns its API token."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CREATE_STAFF.format(username=username, password=password)],
        cwd=PROJECT_ROOT,
        env=mirror.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


class DashboardApi:
    def __init__(self, mirror: MirrorProcess, token: str):
        self.mirror = mirror
        self.headers = {"Authorization": f"Token {token}"}

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.mirror.url}{path}", headers=self.headers, params=params, timeout=10)
        assert response.status_code == 200, response.text[:500]
        return response.json()

    def day(self, **filters) -> dict:
        """The last 24 hours' figures."""
        return self.get("/api/stats/summary/", **filters)["windows"]["24h"]

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = requests.get(f"{self.mirror.url}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def pull_with_requests(mirror: MirrorProcess, image: PushedImage) -> None:
    """A pull as clients make it: the manifest by tag, then every blob (one request each)."""
    base = f"{mirror.url}/v2/{image.repository}"
    manifest = requests.get(f"{base}/manifests/{image.tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    assert manifest.status_code == 200 and manifest.content == image.manifest
    for blob in [image.config, *image.layers]:
        response = requests.get(f"{base}/blobs/{blob.digest}", timeout=30)
        assert response.status_code == 200 and response.content == blob.data


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Read until `done` says so (statistics land at the next flush), or until the timeout;
    the last reading either way, for the caller to assert on."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.3)
        value = read()
    return value


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots)."""
    directory = PROJECT_ROOT / "test-artifacts"
    directory.mkdir(exist_ok=True)
    return directory
