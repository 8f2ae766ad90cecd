"""Session fixtures shared by all tests: a real upstream registry (Debian's Distribution)
with Docker-Hub-style token auth, images pushed to it once per session, a deliberately
broken fake upstream, and an isolated skopeo.

Everything listens on 127.0.0.1, ephemeral ports only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import itertools
import os

import pytest

from tests.support.databases import check_server, drop_created_databases, is_postgres, session_database_url
from tests.support.fake_registry import FakeRegistry, UnknownRepositories, corrupt_image
from tests.support.fault_proxy import FaultProxy
from tests.support.images import PushedImage, PushedIndex, push_image, push_index, retag
from tests.support.s3_server import S3Server
from tests.support.skopeo import Skopeo
from tests.support.token_server import TokenServer
from tests.support.upstream_registry import UpstreamRegistry

MB = 1024 * 1024

UPSTREAM_USER = "mirror-bot"
UPSTREAM_PASSWORD = "mirror-bot-e2e-password"
PRIVATE_REPOSITORIES = frozenset({"private/secret"})


@dataclass
class SessionImages:
    """What the `images` fixture pushed to `upstream` (each with its own seed, so no blob is shared)."""

    upstream: UpstreamRegistry
    small: PushedImage  # library/small:1, one ~100 KB layer
    big: PushedImage  # library/big:1, layers ~4, 6, 8, 10, 12 MB
    multi: PushedIndex  # library/multi:1, linux/amd64 + linux/arm64
    moving: PushedImage  # library/moving:latest as first pushed
    private: PushedImage  # private/secret:1, needs credentials
    moving_history: list[PushedImage] = field(default_factory=list)
    _seeds: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def retag_moving(self, seed: int | None = None) -> PushedImage:
        """Push a new, different image to library/moving:latest upstream ("the tag moved").

        Session-wide side effect: later tests see the moved tag; use
        `moving_current` rather than `moving` if you depend on the current target.
        """
        image = retag(self.upstream, "library/moving", "latest", seed=next(self._seeds) if seed is None else seed)
        self.moving_history.append(image)
        return image

    @property
    def moving_current(self) -> PushedImage:
        return self.moving_history[-1]


# --- Tiers ----------------------------------------------------------------------------------
# Each test gets its tier from where it lives and the fixtures it needs, so a new test is placed
# without anyone remembering a marker: `unit` needs no server (`make test-fast`), `upstream` needs
# a real upstream registry, token server or S3 server in this process, `e2e` runs real mirror
# processes (tests/e2e). `clients` are the tests whose point is a real client daemon, a browser,
# `make run` or the benchmark: they run once, on the SQLite pass. `database` is everything that
# can behave differently on PostgreSQL: it touches the database, in this process or a mirror's
# (but for ENGINE_INDEPENDENT_MODULES below).
SERVER_FIXTURES = frozenset({"upstream", "token_server", "images", "fake_upstream", "s3_server", "proxy", "hub"})
DATABASE_FIXTURES = frozenset({"db", "transactional_db", "django_db_blocker_unblocked", "admin_client", "admin_user"})
CLIENT_MODULES = frozenset(
    {
        "tests/e2e/test_podman.py",
        "tests/e2e/test_containerd.py",
        "tests/e2e/test_skopeo_clients.py",
        "tests/e2e/test_dashboard_browser.py",
        "tests/e2e/test_make_run.py",
        "tests/e2e/test_nginx_front.py",
        "tests/e2e/test_tls.py",
        "tests/e2e/test_conformance.py",
        "tests/benchmarks/test_bench_smoke.py",
        "tests/e2e/test_dockerd.py",
        "tests/e2e/test_docker_image.py",
    }
)
# End-to-end modules whose subject is the same whatever the database: the server's handling of
# connections, what is taken from upstreams, Redis failing, who may read the monitoring
# endpoints, bounded answers, the visibility memory, the test harness. They run on the SQLite
# pass only (with the client tests), which keeps the PostgreSQL pass to what can differ there.
ENGINE_INDEPENDENT_MODULES = frozenset(
    {
        "tests/e2e/test_slow_clients.py",
        "tests/e2e/test_trust_boundaries.py",
        "tests/e2e/test_redis_outage.py",
        "tests/e2e/test_monitoring_access.py",
        "tests/e2e/test_bounded_answers.py",
        "tests/e2e/test_visibility_outage.py",
        "tests/e2e/test_upstream_harness.py",
    }
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = os.path.relpath(str(item.path), ROOT).replace(os.sep, "/")
        fixtures = set(getattr(item, "fixturenames", ()))
        if module.startswith("tests/e2e/"):
            tier = "e2e"
        elif fixtures & SERVER_FIXTURES or module in CLIENT_MODULES:
            tier = "upstream"
        else:
            tier = "unit"
        item.add_marker(tier)
        if module in CLIENT_MODULES:
            item.add_marker("clients")
        if module in ENGINE_INDEPENDENT_MODULES:
            continue
        if tier == "e2e" or fixtures & DATABASE_FIXTURES or item.get_closest_marker("django_db"):
            item.add_marker("database")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The PostgreSQL pass needs its server: say so at once, not in every test."""
    url = session_database_url()
    if is_postgres(url):
        problem = check_server(url)
        if problem:
            pytest.exit(f"DATABASE_URL names a PostgreSQL server that does not answer: {problem}", returncode=1)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """On PostgreSQL the test database is named after this run, so runs from several checkouts
    can share one server (SQLite's file is per run already)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if is_postgres(session_database_url()):
        database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_p{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def process_databases() -> Iterator[None]:
    """The databases given to the mirror processes of this run are dropped at its end."""
    yield
    drop_created_databases()


@pytest.fixture(autouse=True)
def forget_remembered_answers() -> None:
    """Each test edits its own database: answers remembered for an earlier one must go."""
    from registry import memory

    memory.forget_all()


@pytest.fixture(autouse=True)
def forget_api_throttles() -> None:
    """The API's throttles count per process (without Redis): each test starts uncounted."""
    from django.core.cache import caches

    caches["api-throttle"].clear()


@pytest.fixture(scope="session")
def token_server() -> Iterator[TokenServer]:
    server = TokenServer(
        users={UPSTREAM_USER: UPSTREAM_PASSWORD},
        private_repositories=PRIVATE_REPOSITORIES,
        issuer="mirrorsite-e2e-token-issuer",
    ).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def upstream(token_server: TokenServer) -> Iterator[UpstreamRegistry]:
    registry = UpstreamRegistry(
        token_server, username=UPSTREAM_USER, password=UPSTREAM_PASSWORD, service="upstream-registry"
    ).start()
    yield registry
    registry.cleanup()


@pytest.fixture(scope="module")
def proxy(upstream: UpstreamRegistry) -> Iterator[FaultProxy]:
    """A fault proxy in front of the upstream, the module's own (tests throttle or cut it)."""
    fault_proxy = FaultProxy(upstream.url).start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture(scope="session")
def images(upstream: UpstreamRegistry) -> SessionImages:
    small = push_image(upstream, "library/small", "1", layer_sizes=[100 * 1024], seed=1)
    big = push_image(upstream, "library/big", "1", layer_sizes=[4 * MB, 6 * MB, 8 * MB, 10 * MB, 12 * MB], seed=2)
    multi = push_index(
        upstream,
        "library/multi",
        "1",
        platforms=[("linux", "amd64"), ("linux", "arm64")],
        layer_sizes=[100 * 1024],
        seed=3,
    )
    moving = push_image(upstream, "library/moving", "latest", layer_sizes=[100 * 1024], seed=4)
    private = push_image(upstream, "private/secret", "1", layer_sizes=[100 * 1024], seed=5)
    return SessionImages(
        upstream=upstream, small=small, big=big, multi=multi, moving=moving, private=private, moving_history=[moving]
    )


@pytest.fixture(scope="session")
def broken_image() -> PushedImage:
    """`library/bad:latest` as its manifest describes it; `fake_upstream` serves its layer corrupt."""
    return corrupt_image()


@pytest.fixture(scope="session")
def fake_upstream(broken_image: PushedImage) -> Iterator[FakeRegistry]:
    """A registry (no auth) that serves `broken_image` with its layer's bytes not matching its
    digest (one byte flipped, same length: only a digest check tells), for the mirror's checks."""
    fake = FakeRegistry(UnknownRepositories(lambda name: name != broken_image.repository)).start()
    fake.serve(broken_image.repository, broken_image, corrupt=[broken_image.layers[0].digest])
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3-compatible server (moto) on loopback; tests make their own buckets in it."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()
