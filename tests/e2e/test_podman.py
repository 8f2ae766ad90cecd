"""podman pulls through the mirror, configured as the manual says (`registries.conf` with a
mirror for docker.io), and by naming the mirror directly.

The upstream Distribution stands in for Docker Hub: the mirror maps `docker.io/...` to it.
Docker Hub itself is never reached: every non-loopback request of the client goes to the
egress trap, which refuses it, so a client that fell back from the mirror to docker.io
would fail the test rather than pass it quietly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.clients import ClientImages, Watch, blob_digests, push_client_images
from tests.support.egress import EgressTrap
from tests.support.manual import client_config
from tests.support.podman import Podman
from tests.support.upstream_registry import free_port

AGENT = "containers/"  # podman's User-Agent (containers/image)
DOCKER_HUB = "registry-1.docker.io:443"


@pytest.fixture(scope="module")
def trap() -> Iterator[EgressTrap]:
    trap = EgressTrap().start()
    yield trap
    trap.stop()


@pytest.fixture(scope="module")
def pm_images(upstream) -> ClientImages:
    return push_client_images(upstream, "pm", seed=9100)


@pytest.fixture
def new_podman(trap) -> Iterator[Callable[[str], Podman]]:
    """Podman instances with their own storage, configured with the given registries.conf."""
    made: list[Podman] = []

    def make(registries_conf: str) -> Podman:
        podman = Podman(registries_conf, extra_env=trap.env)
        made.append(podman)
        return podman

    yield make
    for podman in made:
        podman.cleanup()


def config_id(image) -> str:
    """podman's image ID: the hex of the config blob's digest."""
    return image.config.digest.split(":", 1)[1]


def test_pull_by_tag_through_registries_conf(mirror, upstream, trap, pm_images, new_podman):
    image = pm_images.tag
    watch = Watch.start(mirror, upstream, trap)
    podman = new_podman(client_config("registries.conf", mirror.host))
    podman.pull("docker.io/library/pm-tag:1")
    pulled = podman.inspect("docker.io/library/pm-tag:1")
    assert pulled["Digest"] == image.digest
    assert pulled["Id"] == config_id(image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)
    served = [e for e in watch.mirror_entries() if e.user_agent.startswith(AGENT)]
    assert {e.path for e in served if "/manifests/" in e.path} == {"/v2/library/pm-tag/manifests/1"}

    # Warm, from fresh storage, with the short form podman itself expands to docker.io/library/.
    watch = Watch.start(mirror, upstream, trap)
    again = new_podman(client_config("registries.conf", mirror.host))
    again.pull("docker.io/pm-tag:1")
    assert again.inspect("docker.io/library/pm-tag:1")["Digest"] == image.digest
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)


def test_pull_by_digest_through_registries_conf(mirror, upstream, trap, pm_images, new_podman):
    image = pm_images.digest
    watch = Watch.start(mirror, upstream, trap)
    podman = new_podman(client_config("registries.conf", mirror.host))
    reference = f"docker.io/library/pm-digest@{image.digest}"
    podman.pull(reference)
    pulled = podman.inspect(reference)
    assert pulled["Digest"] == image.digest
    assert pulled["Id"] == config_id(image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)
    manifests = {e.path for e in watch.mirror_entries() if "/manifests/" in e.path}
    assert manifests == {f"/v2/library/pm-digest/manifests/{image.digest}"}


def test_one_platform_of_a_multi_platform_image(mirror, upstream, trap, pm_images, new_podman):
    index = pm_images.multi
    arm, amd = index.child("arm64"), index.child("amd64")
    watch = Watch.start(mirror, upstream, trap)
    podman = new_podman(client_config("registries.conf", mirror.host))
    podman.pull("docker.io/library/pm-multi:1", "--platform", "linux/arm64")
    pulled = podman.inspect("docker.io/library/pm-multi:1")
    assert (pulled["Os"], pulled["Architecture"]) == ("linux", "arm64")
    assert pulled["Id"] == config_id(arm)
    assert pulled["Digest"] == index.digest
    assert f"docker.io/library/pm-multi@{arm.digest}" in pulled["RepoDigests"]
    watch.assert_through_mirror(AGENT, blob_digests(arm), absent=blob_digests(amd), cold=True)


def test_pull_naming_the_mirror(mirror, upstream, trap, pm_images, new_podman):
    image = pm_images.direct
    watch = Watch.start(mirror, upstream, trap)
    podman = new_podman("")  # no mirror configured: the reference names the mirror
    reference = f"{mirror.host}/library/pm-direct:1"
    podman.pull(reference, "--tls-verify=false")
    pulled = podman.inspect(reference)
    assert pulled["Digest"] == image.digest
    assert pulled["Id"] == config_id(image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)

    # A one-component name means library/<name> (podman adds nothing for a non-Hub registry).
    watch = Watch.start(mirror, upstream, trap)
    again = new_podman("")
    again.pull(f"{mirror.host}/pm-direct:1", "--tls-verify=false")
    pulled = again.inspect(f"{mirror.host}/pm-direct:1")
    assert pulled["Digest"] == image.digest
    assert pulled["Id"] == config_id(image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)
    served = {e.path for e in watch.mirror_entries() if e.user_agent.startswith(AGENT)}
    assert "/v2/pm-direct/manifests/1" in served


def test_mirror_down_or_without_the_image_falls_back_to_docker_io(mirror, upstream, trap, new_podman):
    """What the manual promises: podman tries `location` (Docker Hub) when the mirror fails.
    Here that attempt lands in the trap, so the pull fails instead of going around the mirror."""
    unreachable = new_podman(client_config("registries.conf", f"127.0.0.1:{free_port()}"))
    trap.clear()
    failed = unreachable.pull("docker.io/library/pm-tag:1", check=False)
    assert failed.returncode != 0
    assert DOCKER_HUB in trap.hosts, (failed.stderr, trap.requests)

    watch = Watch.start(mirror, upstream, trap)
    podman = new_podman(client_config("registries.conf", mirror.host))
    failed = podman.pull("docker.io/library/pm-absent:1", check=False)
    assert failed.returncode != 0
    asked = [e for e in watch.mirror_entries() if e.path == "/v2/library/pm-absent/manifests/1"]
    assert asked and {e.status for e in asked} == {404}
    assert DOCKER_HUB in trap.hosts, (failed.stderr, trap.requests)
