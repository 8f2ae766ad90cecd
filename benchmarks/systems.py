"""Starting and stopping what one run needs, all on 127.0.0.1 with free ports:

* the upstream: Debian's Distribution with Docker-Hub-style token auth (tests/support),
* Distribution in proxy mode (a second `docker-registry`, its own fresh storage),
* Mirrorsite as a real `manage.py serve` process (fresh MIRROR_DATA_DIR).

Both systems pull from the upstream with the same account.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tests.support.mirror import PROJECT_ROOT, MirrorProcess
from tests.support.skopeo import Skopeo
from tests.support.token_server import TokenServer
from tests.support.upstream_registry import REGISTRY_BIN, UpstreamRegistry

UPSTREAM_USER = "bench-bot"
UPSTREAM_PASSWORD = "bench-bot-password"

# Settings a developer's shell might carry that would make Mirrorsite differ from its defaults.
_MIRROR_ENV_PREFIXES = ("MIRROR_", "DJANGO_", "REGISTRY_", "DATABASE_URL", "REDIS_URL", "GUNICORN_CMD_ARGS")


class DistributionProxy(UpstreamRegistry):
    """Distribution 2.8 as a pull-through cache (`proxy:` config) of `remote`.

    Reuses UpstreamRegistry's process handling and log parsing; only the config differs.
    The config follows the `registry:2` image's defaults (in-memory blob descriptor cache).
    """

    def __init__(self, remote: UpstreamRegistry, workdir: str) -> None:
        self.remote = remote  # set first: the parent's __init__ writes the config
        super().__init__(
            remote.token_server, username=remote.username, password=remote.password,
            service=remote.service, workdir=workdir,
        )

    def config(self) -> dict:
        config = super().config()
        del config["auth"]  # clients pull from the proxy anonymously
        del config["storage"]["delete"]
        config["storage"]["cache"] = {"blobdescriptor": "inmemory"}
        config["http"] = {
            "addr": self.host, "secret": "mirrorsite-bench-http-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        config["proxy"] = {
            "remoteurl": self.remote.url, "username": self.remote.username, "password": self.remote.password,
        }
        return config


@dataclass
class System:
    """One system under test, as the measurements see it."""

    key: str  # "distribution" or "mirrorsite"
    label: str
    host: str  # 127.0.0.1:port
    pid: Callable[[], int]  # root of the server's process tree (for memory)
    alive: Callable[[], bool]
    log_tail: Callable[[], str]

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def mirror_setting(mirror: MirrorProcess, name: str) -> str:
    """A Django setting as the running mirror sees it (same environment, same data dir)."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"from django.conf import settings; print(settings.{name})"],
        cwd=PROJECT_ROOT, env=mirror.env, capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def check_tools(loadgen: str) -> None:
    """Every external program the run needs; a missing one is an error, never a silent skip."""
    missing = [] if os.access(REGISTRY_BIN, os.X_OK) else [REGISTRY_BIN]
    missing += [t for t in ("skopeo", "curl") if shutil.which(t) is None]
    if loadgen == "wrk" and shutil.which("wrk") is None:
        missing.append("wrk")
    if missing:
        raise RuntimeError(f"missing tools: {', '.join(missing)} (`make bench` installs them with apt-get)")


@dataclass
class Stack:
    workdir: Path
    upstream: UpstreamRegistry
    distribution: DistributionProxy
    mirror: MirrorProcess
    skopeo: Skopeo
    mirror_tag_ttl: int

    @property
    def systems(self) -> list[System]:
        d, m = self.distribution, self.mirror
        return [
            System("distribution", "Distribution (proxy)", d.host,
                   lambda: d._proc.pid if d._proc else -1, lambda: d.running, d.log_tail),
            System("mirrorsite", "Mirrorsite", m.host,
                   lambda: m.process.pid if m.process else -1,
                   lambda: m.process is not None and m.process.poll() is None, m.log_tail),
        ]

    @property
    def scratch(self) -> Path:
        path = self.workdir / "scratch"
        path.mkdir(exist_ok=True)
        return path


@contextlib.contextmanager
def running_stack(mirror_env: dict[str, str] | None = None, keep: bool = False) -> Iterator[Stack]:
    """Start upstream, Distribution proxy and Mirrorsite; stop them all on the way out, whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="mbench-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, workdir, True)
        token_server = TokenServer(
            users={UPSTREAM_USER: UPSTREAM_PASSWORD}, issuer="mirrorsite-bench-token-issuer",
            workdir=str(_mkdir(workdir / "token")),
        ).start()
        stack.callback(token_server.stop)
        # The upstream must be up first: Distribution's proxy exits at start-up without it.
        upstream = UpstreamRegistry(
            token_server, username=UPSTREAM_USER, password=UPSTREAM_PASSWORD, service="bench-upstream",
            workdir=str(_mkdir(workdir / "upstream")),
        ).start()
        stack.callback(upstream.stop)
        distribution = DistributionProxy(upstream, str(_mkdir(workdir / "distribution"))).start()
        stack.callback(distribution.stop)
        mirror = MirrorProcess(
            _mkdir(workdir / "mirrorsite") / "data", upstream.url, username=upstream.username,
            password=upstream.password,
        )
        # Production defaults, not the e2e tests' settings: drop inherited overrides, buffer pull times.
        for key in list(mirror.env):
            if key.startswith(_MIRROR_ENV_PREFIXES) and key not in (
                "MIRROR_DATA_DIR", "REGISTRY_HTTP_ADDR", "REGISTRY_PROXY_REMOTEURL", "REGISTRY_PROXY_USERNAME",
                "REGISTRY_PROXY_PASSWORD", "MIRROR_UPSTREAM_LIBRARY_PREFIX", "DJANGO_SETTINGS_MODULE",
                "DATABASE_URL",  # the run's own (SQLite in the data directory, or a fresh PostgreSQL database)
            ):
                del mirror.env[key]
        # The web tier as deployed (docker-compose runs the Celery worker and beat as services
        # of their own): what serves the pulls is what is measured, memory included.
        mirror.env["MIRROR_EMBEDDED_WORKERS"] = "false"
        mirror.env.update(mirror_env or {})
        stack.callback(mirror.database.drop)
        stack.callback(mirror.stop)
        mirror.start()
        ttl = int(mirror_setting(mirror, "MIRROR_TAG_TTL"))
        skopeo = Skopeo(_mkdir(workdir / "skopeo"))
        yield Stack(workdir, upstream, distribution, mirror, skopeo, ttl)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
