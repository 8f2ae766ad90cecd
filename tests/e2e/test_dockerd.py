"""dockerd pulls through the mirror, configured with the manual's `daemon.json` word for word.

The upstream Distribution stands in for Docker Hub: dockerd uses `registry-mirrors` for
docker.io images only, so it is given Docker Hub short names (`dk-tag:1`, `dkorg/app:1`),
asks the mirror for `library/dk-tag`, and the mirror fetches it from the upstream. Docker Hub
itself is never reached: dockerd's non-loopback traffic goes to the egress trap, so a pull
that falls back from the mirror to Hub is seen there and fails instead of quietly passing.

The session's dockerd (tests/e2e/conftest.py) serves the module, its `registry-mirrors`
switched by SIGHUP where a test needs another mirror; two tests start daemons of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
import contextlib
import json
from pathlib import Path
import time

import pytest
import requests

from tests.support import dockerd as dockerd_support
from tests.support.accesslog import AccessLog, blob_gets
from tests.support.clients import ClientImages, Watch, blob_digests, push_client_images
from tests.support.dockerd import Dockerd, busybox_image
from tests.support.egress import EgressTrap
from tests.support.images import push_built, push_image, push_index, retag
from tests.support.manual import client_config
from tests.support.mirror import MirrorProcess
from tests.support.upstream_registry import UpstreamRegistry, free_port

AGENT = "docker/"  # dockerd's User-Agent: docker/20.10.24+dfsg1 go/... UpstreamClient(...)
DOCKER_HUB = "registry-1.docker.io:443"
TAG_TTL = 2  # the session mirror's (tests/e2e/conftest.py)
# The outage mirror's: long enough that a pull right after the upstream stops is within it.
OUTAGE_TAG_TTL = 6


@pytest.fixture(scope="module")
def trap(dockerd_trap) -> EgressTrap:
    return dockerd_trap


@pytest.fixture
def clean_images(dockerd) -> Iterator[Dockerd]:
    """The module's dockerd with no image, before and after the test."""
    dockerd.remove_all_images()
    yield dockerd
    dockerd.remove_all_images()


@contextlib.contextmanager
def mirroring(daemon: Dockerd, host: str, usual: str) -> Iterator[Dockerd]:
    """The daemon's registry-mirrors point at `host` (reloaded by SIGHUP), then at `usual` again."""
    daemon.reload(client_config("daemon.json", host))
    try:
        yield daemon
    finally:
        daemon.reload(client_config("daemon.json", usual))


@pytest.fixture(scope="module")
def dk_images(upstream) -> ClientImages:
    return push_client_images(upstream, "dk", seed=9400)


def config_id(image) -> str:
    return image.config.digest


def assert_pulled(daemon: Dockerd, reference: str, repository: str, digest: str, image_id: str) -> dict:
    """The image is local under `reference`, with the upstream's manifest digest and config."""
    pulled = daemon.inspect(reference)
    assert f"{repository}@{digest}" in pulled["RepoDigests"], pulled["RepoDigests"]
    assert pulled["Id"] == image_id
    return pulled


def test_the_daemon_runs_inside_its_directory(mirror, upstream, trap):
    """Nothing of a daemon's outlives it in /etc/docker or /run, a container run included
    (dockerd 20.10 would write /etc/docker/key.json without `deprecated-key-path`)."""

    def listing() -> set[str]:
        return {str(p) for top in (Path("/etc/docker"), Path("/run")) if top.exists() for p in top.rglob("*")}

    image = push_built(upstream, busybox_image("library/dk-inside", "1", "inside"))
    before = listing()
    daemon = Dockerd(client_config("daemon.json", mirror.host), extra_env=trap.env).start()
    try:
        info = json.loads(daemon.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
        assert info["Mirrors"] == [f"http://{mirror.host}/"]
        assert (
            daemon.docker("run", "--rm", "--network", "host", image.repository.split("/", 1)[1] + ":1").stdout
            == "inside\n"
        )
    finally:
        daemon.cleanup()
    assert not Path("/etc/docker/key.json").exists()
    leftover = listing() - before
    if dockerd_support.running_daemons():
        # Other daemons of ours (the session's) still share these; the last one to stop removes them.
        shared = {str(d) for d in dockerd_support.HOST_DIRS}
        assert {Path(p) for p in leftover & shared} <= dockerd_support.made_by_us()
        leftover -= shared
    assert leftover == set()


def test_pull_by_tag(clean_images, mirror, upstream, trap, dk_images):
    image = dk_images.tag
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("dk-tag:1")
    assert_pulled(clean_images, "dk-tag:1", "dk-tag", image.digest, config_id(image))
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)
    served = [e for e in watch.mirror_entries() if e.user_agent.startswith(AGENT)]
    # dockerd resolves the tag (HEAD), then fetches the manifest by the digest it got.
    assert {e.path for e in served if "/manifests/" in e.path} <= {
        "/v2/library/dk-tag/manifests/1",
        f"/v2/library/dk-tag/manifests/{image.digest}",
    }

    # After `docker rmi`, the same pull is served from the mirror's cache: no upstream blob GET.
    clean_images.docker("rmi", "dk-tag:1")
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("docker.io/library/dk-tag:1")
    assert_pulled(clean_images, "dk-tag:1", "dk-tag", image.digest, config_id(image))
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)


def test_pull_of_a_repository_outside_library(clean_images, mirror, upstream, trap):
    image = push_image(upstream, "dkorg/app", "1", layer_sizes=[64 * 1024, 200 * 1024], seed=9410)
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("dkorg/app:1")
    assert_pulled(clean_images, "dkorg/app:1", "dkorg/app", image.digest, config_id(image))
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)
    assert "/v2/dkorg/app/manifests/1" in {e.path for e in watch.mirror_entries()}

    clean_images.docker("rmi", "dkorg/app:1")
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("dkorg/app:1")
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)


def test_pull_by_digest(clean_images, mirror, upstream, trap, dk_images):
    image = dk_images.digest
    watch = Watch.start(mirror, upstream, trap)
    reference = f"dk-digest@{image.digest}"
    clean_images.pull(reference)
    assert_pulled(clean_images, reference, "dk-digest", image.digest, config_id(image))
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)
    manifests = {e.path for e in watch.mirror_entries() if "/manifests/" in e.path}
    assert manifests == {f"/v2/library/dk-digest/manifests/{image.digest}"}

    clean_images.docker("rmi", reference)
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull(reference)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)


@pytest.mark.parametrize("oci", [False, True], ids=["docker-manifest-list", "oci-index"])
def test_one_platform_of_a_multi_platform_image(clean_images, mirror, upstream, trap, oci):
    name = f"dk-multi-{'oci' if oci else 'list'}"
    index = push_index(upstream, f"library/{name}", "1", layer_sizes=[64 * 1024, 200 * 1024], seed=9420 + oci, oci=oci)
    arm, amd = index.child("arm64"), index.child("amd64")
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull(f"{name}:1", "--platform", "linux/arm64")
    pulled = assert_pulled(clean_images, f"{name}:1", name, index.digest, config_id(arm))
    assert (pulled["Os"], pulled["Architecture"]) == ("linux", "arm64")
    watch.assert_through_mirror(AGENT, blob_digests(arm), absent=blob_digests(amd), cold=True)

    clean_images.docker("rmi", f"{name}:1")
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull(f"{name}:1", "--platform", "linux/arm64")
    watch.assert_through_mirror(AGENT, blob_digests(arm), absent=blob_digests(amd), cold=False)


def test_pull_all_tags(clean_images, mirror, upstream, trap):
    tagged = {
        tag: push_image(upstream, "library/dk-all", tag, layer_sizes=[64 * 1024], seed=9430 + n)
        for n, tag in enumerate(["1", "2", "latest"])
    }
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("dk-all", "--all-tags")
    for tag, image in tagged.items():
        assert_pulled(clean_images, f"dk-all:{tag}", "dk-all", image.digest, config_id(image))
    blobs = [digest for image in tagged.values() for digest in blob_digests(image)]
    watch.assert_through_mirror(AGENT, blobs, cold=True)
    assert "/v2/library/dk-all/tags/list" in {e.path for e in watch.mirror_entries() if e.status == 200}


def test_run_an_image_not_yet_local(clean_images, mirror, upstream, trap):
    image = push_built(upstream, busybox_image("library/dk-run", "1", "hello from the mirror"))
    watch = Watch.start(mirror, upstream, trap)
    ran = clean_images.docker("run", "--rm", "--network", "host", "dk-run:1")
    assert ran.stdout.strip() == "hello from the mirror"
    assert "Unable to find image 'dk-run:1' locally" in ran.stderr
    assert_pulled(clean_images, "dk-run:1", "dk-run", image.digest, config_id(image))
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)


def test_four_daemons_pulling_one_fresh_image_cost_one_upstream_get_per_blob(mirror, upstream, trap):
    image = push_image(upstream, "library/dk-four", "1", layer_sizes=[2 * 1024 * 1024, 3 * 1024 * 1024], seed=9440)
    daemons = [Dockerd(client_config("daemon.json", mirror.host), extra_env=trap.env) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(Dockerd.start, daemons))
        watch = Watch.start(mirror, upstream, trap)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda daemon: daemon.pull("dk-four:1"), daemons))
        for daemon in daemons:
            assert_pulled(daemon, "dk-four:1", "dk-four", image.digest, config_id(image))
        watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)  # one upstream GET per blob
        served = [e for e in watch.mirror_entries() if e.user_agent.startswith(AGENT) and e.status == 200]
        for blob in image.layers:
            assert len(blob_gets(served, blob.digest)) == 4
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(Dockerd.cleanup, daemons))


def test_a_moved_tag_gives_the_new_digest_after_the_ttl(clean_images, mirror, upstream, trap):
    before = push_image(upstream, "library/dk-moving", "latest", layer_sizes=[64 * 1024], seed=9450)
    clean_images.pull("dk-moving")
    assert_pulled(clean_images, "dk-moving", "dk-moving", before.digest, config_id(before))
    after = retag(upstream, "library/dk-moving", "latest", layer_sizes=[64 * 1024], seed=9451)
    time.sleep(TAG_TTL + 0.5)  # the mirror asks the upstream again once its tag TTL is over
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("dk-moving")
    assert_pulled(clean_images, "dk-moving", "dk-moving", after.digest, config_id(after))
    watch.assert_through_mirror(AGENT, blob_digests(after), cold=True)


def test_sighup_reloads_registry_mirrors(clean_images, mirror, upstream, trap):
    image = push_image(upstream, "library/dk-reload", "1", layer_sizes=[64 * 1024], seed=9460)
    dead = f"127.0.0.1:{free_port()}"
    with mirroring(clean_images, dead, mirror.host):
        info = json.loads(clean_images.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
        assert info["Mirrors"] == [f"http://{dead}/"]
        trap.clear()
        log_mark = len(clean_images.log_text())
        failed = clean_images.pull("dk-reload:1", check=False)
        assert failed.returncode != 0
        assert DOCKER_HUB in trap.hosts  # the mirror down: dockerd went to Docker Hub
        assert "connection refused" in fallback_reasons(clean_images, log_mark)[0]
    info = json.loads(clean_images.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
    assert info["Mirrors"] == [f"http://{mirror.host}/"]
    watch = Watch.start(mirror, upstream, trap)
    clean_images.pull("dk-reload:1")
    assert_pulled(clean_images, "dk-reload:1", "dk-reload", image.digest, config_id(image))
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)


# --- the upstream stopped, and what users see when the mirror fails -------------------------


@pytest.fixture(scope="module")
def own_upstream(token_server, upstream) -> Iterator[UpstreamRegistry]:
    """An upstream of this module's own, so stopping it disturbs no other test."""
    registry = UpstreamRegistry(
        token_server, username=upstream.username, password=upstream.password, service="dockerd-upstream"
    ).start()
    yield registry
    registry.cleanup()


@pytest.fixture(scope="module")
def own_mirror(own_upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path_factory.mktemp("dockerd-mirror") / "data",
        own_upstream.url,
        username=own_upstream.username,
        password=own_upstream.password,
        MIRROR_TAG_TTL=str(OUTAGE_TAG_TTL),
    ).start()
    yield process
    process.stop()


@pytest.fixture
def upstream_down(own_upstream) -> Iterator[UpstreamRegistry]:
    """The test stops the upstream with this; it is running again afterwards."""
    yield own_upstream
    if not own_upstream.running:
        own_upstream.start()


def test_cached_images_pull_with_the_upstream_stopped(
    clean_images, mirror, own_mirror, own_upstream, trap, upstream_down
):
    image = push_image(own_upstream, "library/dk-outage", "1", layer_sizes=[64 * 1024, 200 * 1024], seed=9470)
    with mirroring(clean_images, own_mirror.host, mirror.host):
        clean_images.pull("dk-outage:1")
        upstream_down.stop()
        for _phase in ("within the tag TTL", "after it (stale)"):
            clean_images.docker("rmi", "dk-outage:1")
            watch = Watch.start(own_mirror, own_upstream, trap)
            clean_images.pull("dk-outage:1")
            assert_pulled(clean_images, "dk-outage:1", "dk-outage", image.digest, config_id(image))
            watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)
            time.sleep(OUTAGE_TAG_TTL + 0.5)


def hub_error(failed) -> str:
    """What `docker pull` prints when the mirror failed: Docker Hub's error (here, the trap's refusal)."""
    assert failed.returncode != 0
    return failed.stderr


FALLBACK = "Attempting next endpoint for pull after error: "


def fallback_reasons(daemon: Dockerd, since: int) -> list[str]:
    """The errors dockerd logged (level info) when it gave up on an endpoint and tried the next."""
    return [
        line.split(FALLBACK, 1)[1].rstrip('"') for line in daemon.log_text()[since:].splitlines() if FALLBACK in line
    ]


def mirror_message(process: MirrorProcess, path: str) -> str:
    """The mirror's own error for an anonymous GET of `path`, as its registry JSON says it."""
    answer = requests.get(f"{process.url}{path}", timeout=30)
    [error] = answer.json()["errors"]
    return f"{error['code'].lower().replace('_', ' ')}: {error['message']}"


def mirror_answers(process: MirrorProcess, mark: int, path: str) -> set[int]:
    return {
        e.status for e in AccessLog(process.log_path).entries(mark) if e.path == path and e.user_agent.startswith(AGENT)
    }


def test_an_image_the_mirror_does_not_have_404(clean_images, mirror, trap):
    mark = AccessLog(mirror.log_path).mark()
    log_mark = len(clean_images.log_text())
    trap.clear()
    failed = clean_images.pull("dk-absent:1", check=False)
    assert mirror_answers(mirror, mark, "/v2/library/dk-absent/manifests/1") == {404}
    # The user sees Docker Hub's answer, not the mirror's: here the trap refused the connection.
    assert "registry-1.docker.io" in hub_error(failed), failed.stderr
    assert DOCKER_HUB in trap.hosts
    # The mirror's answer is in dockerd's log only, first of the endpoints it gave up on.
    reasons = fallback_reasons(clean_images, log_mark)
    assert reasons[0] == mirror_message(mirror, "/v2/library/dk-absent/manifests/1"), reasons


@pytest.fixture(scope="module")
def guarded(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    """Client authentication on, every repository for logged-in users only."""
    process = MirrorProcess(
        tmp_path_factory.mktemp("dockerd-guarded") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_AUTH="true",
        MIRROR_ACCESS_DEFAULT_POLICY="authenticated",
    ).start()
    yield process
    process.stop()


def test_client_authentication_on_401(clean_images, mirror, guarded, trap, images):
    """dockerd sends no credentials to a mirror: with client authentication on, it is refused
    and goes to Docker Hub."""
    with mirroring(clean_images, guarded.host, mirror.host):
        mark = AccessLog(guarded.log_path).mark()
        log_mark = len(clean_images.log_text())
        trap.clear()
        failed = clean_images.pull("small:1", check=False)
        assert mirror_answers(guarded, mark, "/v2/library/small/manifests/1") == {401}
        assert "registry-1.docker.io" in hub_error(failed), failed.stderr
        assert DOCKER_HUB in trap.hosts
        reasons = fallback_reasons(clean_images, log_mark)
        # dockerd's words for the mirror's 401 (its anonymous token does not admit the pull).
        assert "requested access to the resource is denied" in reasons[0] and "unauthorized" in reasons[0], reasons


def test_upstream_down_and_nothing_cached_503(clean_images, mirror, own_mirror, own_upstream, trap, upstream_down):
    push_image(own_upstream, "library/dk-never", "1", layer_sizes=[64 * 1024], seed=9480)
    with mirroring(clean_images, own_mirror.host, mirror.host):
        upstream_down.stop()
        mark = AccessLog(own_mirror.log_path).mark()
        log_mark = len(clean_images.log_text())
        trap.clear()
        failed = clean_images.pull("dk-never:1", check=False)
        assert mirror_answers(own_mirror, mark, "/v2/library/dk-never/manifests/1") == {503}
        assert "registry-1.docker.io" in hub_error(failed), failed.stderr
        assert DOCKER_HUB in trap.hosts
        reasons = fallback_reasons(clean_images, log_mark)
        # For a 5xx dockerd logs the status only, not the mirror's message.
        assert reasons[0] == "received unexpected HTTP status: 503 Service Unavailable", reasons


def test_login_without_client_authentication_succeeds_for_any_password(clean_images, mirror):
    """As Distribution does: the mirror ignores credentials, so `docker login` cannot tell a wrong password."""
    done = clean_images.docker("login", "-u", "nobody", "--password-stdin", mirror.host, input="not-a-password\n")
    assert "Login Succeeded" in done.stdout
    clean_images.docker("logout", mirror.host)


def test_docker_build_pulls_its_base_through_the_mirror(clean_images, mirror, upstream, trap, tmp_path):
    """Docker's own builder (BuildKit inside dockerd) takes the daemon's registry-mirrors."""
    image = push_built(upstream, busybox_image("library/dk-build-base", "1", "built on the mirror"))
    (tmp_path / "Dockerfile").write_text('FROM dk-build-base:1\nRUN ["/bin/busybox", "touch", "/built"]\n')
    watch = Watch.start(mirror, upstream, trap)
    clean_images.docker(
        "build",
        "--network",
        "host",
        "-t",
        "dk-built",
        ".",
        cwd=tmp_path,
        env={"DOCKER_BUILDKIT": "1"},
    )
    ran = clean_images.docker("run", "--rm", "--network", "host", "dk-built")
    assert ran.stdout.strip() == "built on the mirror"
    # BuildKit fetches with containerd's resolver, hence containerd's User-Agent.
    watch.assert_through_mirror("containerd/", blob_digests(image), cold=True)
