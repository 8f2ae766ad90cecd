"""containerd pulls through the mirror (`ctr images pull`), configured as the manual says:
`certs.d/docker.io/hosts.toml` naming the mirror, read with `--hosts-dir`. containerd then
adds `?ns=docker.io` to every request it sends the mirror. Also pulls naming the mirror.

The daemon is the fixture's own (root, state, socket under a temporary directory; no CRI
plugin). Docker Hub is never reached: `ctr`'s non-loopback requests go to the egress trap,
which refuses them, so a pull that fell back from the mirror to Docker Hub fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
import itertools
from pathlib import Path

import pytest

from tests.support.clients import ClientImages, Watch, blob_digests, push_client_images
from tests.support.containerd import Containerd, write_hosts_dir
from tests.support.egress import EgressTrap
from tests.support.images import sha256_digest
from tests.support.manual import client_config
from tests.support.upstream_registry import free_port

AGENT = "containerd/"
DOCKER_HUB = "registry-1.docker.io:443"
NS = {"ns": "docker.io"}

_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def trap() -> Iterator[EgressTrap]:
    trap = EgressTrap().start()
    yield trap
    trap.stop()


@pytest.fixture(scope="module")
def ctr_images(upstream) -> ClientImages:
    return push_client_images(upstream, "ctr", seed=9200)


@pytest.fixture
def namespace() -> str:
    """A containerd namespace of the test's own: its content store starts empty."""
    return f"t{next(_namespaces)}"


def hosts_dir(directory: Path, mirror_host: str, hosts_toml: str | None = None) -> Path:
    return write_hosts_dir(directory, "docker.io", hosts_toml or client_config("hosts.toml", mirror_host))


def pull(containerd: Containerd, trap: EgressTrap, namespace: str, *args: str, check: bool = True):
    return containerd.ctr("images", "pull", *args, namespace=namespace, env=trap.env, check=check)


def assert_complete(containerd: Containerd, namespace: str, name: str, image) -> None:
    """Listed with the manifest's digest, every blob present, unpacked, bytes as pushed."""
    assert containerd.images(namespace)[name].digest == image.digest
    checked = containerd.check(namespace, name)
    n = len(image.blobs)
    assert (checked.digest, checked.status, checked.unpacked) == (image.digest, f"complete ({n}/{n})", "true")
    assert containerd.content(namespace, image.digest) == image.manifest
    for blob in image.blobs:
        assert sha256_digest(containerd.content(namespace, blob.digest)) == blob.digest


def test_pull_by_tag_through_hosts_toml(mirror, upstream, trap, containerd, ctr_images, namespace, tmp_path):
    image = ctr_images.tag
    certs = hosts_dir(tmp_path / "certs.d", mirror.host)
    watch = Watch.start(mirror, upstream, trap)
    pull(containerd, trap, namespace, "--hosts-dir", str(certs), "docker.io/library/ctr-tag:1")
    assert_complete(containerd, namespace, "docker.io/library/ctr-tag:1", image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True, query=NS)

    # Warm, in a fresh namespace. ctr does not expand docker.io/<name>: the mirror does.
    fresh = f"{namespace}-warm"
    watch = Watch.start(mirror, upstream, trap)
    pull(containerd, trap, fresh, "--hosts-dir", str(certs), "docker.io/ctr-tag:1")
    assert_complete(containerd, fresh, "docker.io/ctr-tag:1", image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False, query=NS)
    served = {e.path for e in watch.mirror_entries()}
    assert "/v2/ctr-tag/manifests/1" in served


def test_one_platform_of_a_multi_platform_image(mirror, upstream, trap, containerd, ctr_images, namespace, tmp_path):
    index = ctr_images.multi
    arm, amd = index.child("arm64"), index.child("amd64")
    certs = hosts_dir(tmp_path / "certs.d", mirror.host)
    watch = Watch.start(mirror, upstream, trap)
    pull(
        containerd,
        trap,
        namespace,
        "--hosts-dir",
        str(certs),
        "--platform",
        "linux/arm64",
        "docker.io/library/ctr-multi:1",
    )
    listed = containerd.images(namespace)["docker.io/library/ctr-multi:1"]
    assert (listed.digest, listed.media_type) == (index.digest, index.media_type)
    assert containerd.content(namespace, index.digest) == index.manifest
    assert containerd.content(namespace, arm.digest) == arm.manifest
    for blob in arm.blobs:
        assert sha256_digest(containerd.content(namespace, blob.digest)) == blob.digest
    assert containerd.content(namespace, amd.digest) is None
    for blob in amd.blobs:
        assert containerd.content(namespace, blob.digest) is None
    watch.assert_through_mirror(AGENT, blob_digests(arm), absent=blob_digests(amd), cold=True, query=NS)
    manifests = {e.path for e in watch.mirror_entries() if "/manifests/" in e.path}
    assert f"/v2/library/ctr-multi/manifests/{amd.digest}" not in manifests
    assert f"/v2/library/ctr-multi/manifests/{arm.digest}" in manifests


def test_pull_by_digest_through_hosts_toml(mirror, upstream, trap, containerd, ctr_images, namespace, tmp_path):
    image = ctr_images.digest
    certs = hosts_dir(tmp_path / "certs.d", mirror.host)
    reference = f"docker.io/library/ctr-digest@{image.digest}"
    watch = Watch.start(mirror, upstream, trap)
    pull(containerd, trap, namespace, "--hosts-dir", str(certs), reference)
    assert_complete(containerd, namespace, reference, image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True, query=NS)
    manifests = {e.path for e in watch.mirror_entries() if "/manifests/" in e.path}
    assert manifests == {f"/v2/library/ctr-digest/manifests/{image.digest}"}


def test_pull_naming_the_mirror(mirror, upstream, trap, containerd, ctr_images, namespace):
    image = ctr_images.direct
    reference = f"{mirror.host}/library/ctr-direct:1"
    watch = Watch.start(mirror, upstream, trap)
    pull(containerd, trap, namespace, "--plain-http", reference)
    assert_complete(containerd, namespace, reference, image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)
    assert all("ns" not in e.query for e in watch.mirror_entries()), "ns is only sent to configured mirrors"

    short = f"{mirror.host}/ctr-direct:1"
    watch = Watch.start(mirror, upstream, trap)
    pull(containerd, trap, f"{namespace}-short", "--plain-http", short)
    assert_complete(containerd, f"{namespace}-short", short, image)
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=False)


def test_mirror_down_or_without_the_image_falls_back_to_the_server(
    mirror, upstream, trap, containerd, namespace, tmp_path
):
    """What the manual promises: containerd tries the next host, Docker Hub, when the mirror
    fails, with or without `server`. Here that attempt lands in the trap and the pull fails."""
    dead = f"127.0.0.1:{free_port()}"
    readme = hosts_dir(tmp_path / "readme", dead)
    without_server = client_config("hosts.toml", dead)
    without_server = "\n".join(line for line in without_server.splitlines() if not line.startswith("server"))
    no_server = hosts_dir(tmp_path / "no-server", dead, without_server + "\n")
    for certs in (readme, no_server):
        trap.clear()
        failed = pull(
            containerd, trap, namespace, "--hosts-dir", str(certs), "docker.io/library/ctr-tag:1", check=False
        )
        assert failed.returncode != 0
        assert DOCKER_HUB in trap.hosts, (certs, failed.stderr, trap.requests)

    certs = hosts_dir(tmp_path / "live", mirror.host)
    watch = Watch.start(mirror, upstream, trap)
    failed = pull(containerd, trap, namespace, "--hosts-dir", str(certs), "docker.io/library/ctr-absent:1", check=False)
    assert failed.returncode != 0
    asked = [e for e in watch.mirror_entries() if e.path == "/v2/library/ctr-absent/manifests/1"]
    assert asked and {e.status for e in asked} == {404}
    assert all(e.query.get("ns") == ["docker.io"] for e in asked)
    assert DOCKER_HUB in trap.hosts, (failed.stderr, trap.requests)
    assert containerd.images(namespace) == {}
