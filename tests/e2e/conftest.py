"""The mirror under test, as real server processes pointed at the session's upstreams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.containerd import Containerd
from tests.support.dockerd import Dockerd
from tests.support.egress import EgressTrap
from tests.support.fake_registry import FakeRegistry
from tests.support.manual import client_config
from tests.support.mirror import MirrorProcess
from tests.support.upstream_registry import UpstreamRegistry

# Short, so a test can watch a tag expire and be revalidated.
TAG_TTL = 2


@pytest.fixture(scope="session")
def mirror(upstream: UpstreamRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorProcess]:
    """The mirror of the token-auth upstream, pulling with the upstream account."""
    process = MirrorProcess(
        tmp_path_factory.mktemp("mirror") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_TAG_TTL=str(TAG_TTL),
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def broken_mirror(fake_upstream: FakeRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorProcess]:
    """A mirror of the fake upstream that serves a layer whose bytes do not match its digest."""
    process = MirrorProcess(tmp_path_factory.mktemp("broken-mirror") / "data", fake_upstream.url).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    """A containerd daemon of the module's own (tests use a namespace each)."""
    daemon = Containerd().start()
    yield daemon
    daemon.cleanup()


@pytest.fixture
def processes() -> Iterator[list[MirrorProcess]]:
    """Mirror processes a test starts, stopped at its end whatever happens."""
    started: list[MirrorProcess] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def dockerd_trap() -> Iterator[EgressTrap]:
    """Where the session's dockerd sends what is not on loopback (Docker Hub, when it falls back)."""
    trap = EgressTrap().start()
    yield trap
    trap.stop()


@pytest.fixture(scope="session")
def dockerd(mirror: MirrorProcess, dockerd_trap: EgressTrap) -> Iterator[Dockerd]:
    """One Docker daemon for the session, configured with the manual's daemon.json for `mirror`
    (tests that need another mirror switch it by SIGHUP and back)."""
    daemon = Dockerd(client_config("daemon.json", mirror.host), extra_env=dockerd_trap.env).start()
    yield daemon
    daemon.cleanup()
