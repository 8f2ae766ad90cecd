"""Starting and stopping what one run needs, all on 127.0.0.1 with free ports:

* the upstream: Debian's Distribution with Docker-Hub-style token auth (tests/support),
* Distribution in proxy mode (a second `docker-registry`, its own fresh storage),
* Mirrorsite as a real `manage.py serve` process (fresh MIRROR_DATA_DIR).

That is the single-node setup. The scaled setup runs two replicas of each system instead:
two Distribution proxies sharing one S3 bucket, two Mirrorsite processes (data directories of
their own) sharing one database, one Redis and another bucket, both buckets on one S3 server
(moto's, on loopback) started for the run; both systems serve blob GETs by redirect to S3.

Both systems pull from the upstream with the same account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import uuid

from tests.support.celery_worker import forget_keys
from tests.support.databases import ProcessDatabase
from tests.support.mirror import PROJECT_ROOT, MirrorProcess
from tests.support.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server
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
    `storage`: a storage driver's section (e.g. `{"s3": {...}}`) instead of its own directory.
    """

    def __init__(self, remote: UpstreamRegistry, workdir: str, storage: dict | None = None) -> None:
        self.remote = remote  # set first: the parent's __init__ writes the config
        self.storage = storage
        super().__init__(
            remote.token_server,
            username=remote.username,
            password=remote.password,
            service=remote.service,
            workdir=workdir,
        )

    def config(self) -> dict:
        config = super().config()
        del config["auth"]  # clients pull from the proxy anonymously
        del config["storage"]["delete"]
        if self.storage is not None:
            del config["storage"]["filesystem"]
            config["storage"].update(self.storage)
        config["storage"]["cache"] = {"blobdescriptor": "inmemory"}
        config["http"] = {
            "addr": self.host,
            "secret": "mirrorsite-bench-http-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        config["proxy"] = {
            "remoteurl": self.remote.url,
            "username": self.remote.username,
            "password": self.remote.password,
        }
        return config


@dataclass
class System:
    """One system under test, as the measurements see it."""

    key: str  # "distribution" or "mirrorsite"
    label: str
    hosts: tuple[str, ...]  # 127.0.0.1:port of each replica; clients take them in turn
    pids: Callable[[], list[int]]  # roots of the servers' process trees (for memory)
    alive: Callable[[], bool]  # every replica still running
    log_tail: Callable[[], str]

    def host(self, client: int = 0) -> str:
        """The replica the `client`-th client of a measurement talks to (alternating)."""
        return self.hosts[client % len(self.hosts)]

    def url(self, client: int = 0) -> str:
        return f"http://{self.host(client)}"


def mirror_setting(mirror: MirrorProcess, name: str) -> str:
    """A Django setting as the running mirror sees it (same environment, same data dir)."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"from django.conf import settings; print(settings.{name})"],
        cwd=PROJECT_ROOT,
        env=mirror.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
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
    distributions: list[DistributionProxy]  # one per replica
    mirrors: list[MirrorProcess]
    skopeo: Skopeo
    mirror_tag_ttl: int

    @property
    def systems(self) -> list[System]:
        ds, ms = self.distributions, self.mirrors
        return [
            System(
                "distribution",
                "Distribution (proxy)",
                tuple(d.host for d in ds),
                lambda: [d._proc.pid if d._proc else -1 for d in ds],
                lambda: all(d.running for d in ds),
                lambda: "\n".join(d.log_tail() for d in ds),
            ),
            System(
                "mirrorsite",
                "Mirrorsite",
                tuple(m.host for m in ms),
                lambda: [m.process.pid if m.process else -1 for m in ms],
                lambda: all(m.process is not None and m.process.poll() is None for m in ms),
                lambda: "\n".join(m.log_tail() for m in ms),
            ),
        ]

    @property
    def scratch(self) -> Path:
        path = self.workdir / "scratch"
        path.mkdir(exist_ok=True)
        return path


@contextlib.contextmanager
def running_stack(mirror_env: dict[str, str] | None = None, keep: bool = False) -> Iterator[Stack]:
    """The single-node setup: upstream, one Distribution proxy and one Mirrorsite on local disk;
    all stopped on the way out, whatever happens."""
    with _upstream_side(keep) as (stack, workdir, upstream):
        distribution = DistributionProxy(upstream, str(_mkdir(workdir / "distribution"))).start()
        stack.callback(distribution.stop)
        mirror = _bench_mirror(_mkdir(workdir / "mirrorsite") / "data", upstream, mirror_env)
        stack.callback(mirror.database.drop)
        stack.callback(mirror.stop)
        mirror.start()
        yield Stack(
            workdir,
            upstream,
            [distribution],
            [mirror],
            Skopeo(_mkdir(workdir / "skopeo")),
            int(mirror_setting(mirror, "MIRROR_TAG_TTL")),
        )


@contextlib.contextmanager
def running_scaled_stack(
    database_url: str, redis_url: str, mirror_env: dict[str, str] | None = None, keep: bool = False, replicas: int = 2
) -> Iterator[Stack]:
    """The scaled setup: `replicas` Distribution proxies on one S3 bucket and `replicas`
    Mirrorsite processes on one database (`database_url`; a fresh one of that name prefix, or
    a shared SQLite file when it is not PostgreSQL), one Redis (`redis_url`, keys under a
    prefix of this run, removed afterwards) and another bucket of the same S3 server."""
    with _upstream_side(keep) as (stack, workdir, upstream):
        s3 = S3Server(_mkdir(workdir / "s3")).start()
        stack.callback(s3.stop)
        distribution_storage = {
            "s3": {
                "bucket": s3.create_bucket("distribution"),
                "region": REGION,
                "regionendpoint": s3.url,
                "accesskey": ACCESS_KEY_ID,
                "secretkey": SECRET_ACCESS_KEY,
                "secure": False,
                "v4auth": True,
                "rootdirectory": "/registry",
            }
        }
        distributions = []
        for i in range(replicas):
            distributions.append(
                DistributionProxy(upstream, str(_mkdir(workdir / f"distribution-{i}")), distribution_storage)
            )
            stack.callback(distributions[-1].stop)
            distributions[-1].start()
        run_id = uuid.uuid4().hex[:12]
        shared = {
            **s3.mirror_env(s3.create_bucket("mirrorsite"), MIRROR_S3_SERVE="redirect"),
            "REDIS_URL": redis_url,
            "MIRROR_REDIS_KEY_PREFIX": f"mirrorsite-bench-{run_id}:",
            # Every replica signs and decrypts with the same key (account secrets, shared tokens).
            "DJANGO_SECRET_KEY": f"mirrorsite-bench-{run_id}-" + "k" * 32,
        }
        del shared["MIRROR_S3_PART_SIZE"]  # the production default, not the tests' smallest parts
        stack.callback(forget_keys, redis_url, shared["MIRROR_REDIS_KEY_PREFIX"])
        first_dir = _mkdir(workdir / "mirrorsite-0") / "data"
        database = ProcessDatabase(first_dir, session_url=database_url)
        stack.callback(database.drop)
        mirrors = []
        for i in range(replicas):
            data_dir = first_dir if i == 0 else _mkdir(workdir / f"mirrorsite-{i}") / "data"
            mirrors.append(_bench_mirror(data_dir, upstream, {**shared, **(mirror_env or {})}, database))
            stack.callback(mirrors[-1].stop)
        for mirror in mirrors:  # together, on a database nobody has migrated yet (they take turns)
            mirror.launch()
        for mirror in mirrors:
            mirror.wait_until_serving()
        yield Stack(
            workdir,
            upstream,
            distributions,
            mirrors,
            Skopeo(_mkdir(workdir / "skopeo")),
            int(mirror_setting(mirrors[0], "MIRROR_TAG_TTL")),
        )


@contextlib.contextmanager
def _upstream_side(keep: bool) -> Iterator[tuple[contextlib.ExitStack, Path, UpstreamRegistry]]:
    """A fresh work directory, the token server and the upstream (started first: Distribution's
    proxy exits at start-up without it); whatever the caller adds to the ExitStack stops first."""
    workdir = Path(tempfile.mkdtemp(prefix="mbench-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, workdir, True)
        token_server = TokenServer(
            users={UPSTREAM_USER: UPSTREAM_PASSWORD},
            issuer="mirrorsite-bench-token-issuer",
            workdir=str(_mkdir(workdir / "token")),
        ).start()
        stack.callback(token_server.stop)
        upstream = UpstreamRegistry(
            token_server,
            username=UPSTREAM_USER,
            password=UPSTREAM_PASSWORD,
            service="bench-upstream",
            workdir=str(_mkdir(workdir / "upstream")),
        ).start()
        stack.callback(upstream.stop)
        yield stack, workdir, upstream


def _bench_mirror(
    data_dir: Path, upstream: UpstreamRegistry, env: dict[str, str] | None, database: ProcessDatabase | None = None
) -> MirrorProcess:
    """A Mirrorsite process (not started) with production defaults, not the e2e tests' settings."""
    mirror = MirrorProcess(
        data_dir, upstream.url, username=upstream.username, password=upstream.password, database=database
    )
    # Drop inherited overrides; pull times are buffered as in production.
    for key in list(mirror.env):
        if key.startswith(_MIRROR_ENV_PREFIXES) and key not in (
            "MIRROR_DATA_DIR",
            "REGISTRY_HTTP_ADDR",
            "REGISTRY_PROXY_REMOTEURL",
            "REGISTRY_PROXY_USERNAME",
            "REGISTRY_PROXY_PASSWORD",
            "MIRROR_UPSTREAM_LIBRARY_PREFIX",
            "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL",  # the run's own (SQLite in the data directory, or a fresh PostgreSQL database)
            "DJANGO_SECRET_KEY",  # MirrorProcess's own: on PostgreSQL the mirror is a deployment and wants one
        ):
            del mirror.env[key]
    # The web tier as deployed (docker-compose runs the Celery worker and beat as services
    # of their own): what serves the pulls is what is measured, memory included.
    mirror.env["MIRROR_EMBEDDED_WORKERS"] = "false"
    mirror.env.update(env or {})
    return mirror


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
