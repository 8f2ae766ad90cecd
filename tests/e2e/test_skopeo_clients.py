"""skopeo as a client of the mirror beyond `skopeo copy` (tests/e2e/test_pull.py):
`inspect --raw`, `inspect`, `list-tags`, naming the mirror or through the manual's
`registries.conf`, and what skopeo does when the mirror fails or is not used at all.

Docker Hub is never reached: skopeo's non-loopback requests go to the egress trap."""

from __future__ import annotations

from collections.abc import Iterator
import json

import pytest

from tests.support.clients import ClientImages, Watch, blob_digests, push_client_images
from tests.support.egress import EgressTrap
from tests.support.images import sha256_digest, tag_existing
from tests.support.manual import client_config
from tests.support.skopeo import Skopeo
from tests.support.upstream_registry import free_port

AGENT = "skopeo/"  # skopeo names itself, podman does not
DOCKER_HUB = "registry-1.docker.io:443"


@pytest.fixture(scope="module")
def trap() -> Iterator[EgressTrap]:
    trap = EgressTrap().start()
    yield trap
    trap.stop()


@pytest.fixture(scope="module")
def sk_images(upstream) -> ClientImages:
    images = push_client_images(upstream, "sk", seed=9300)
    for tag in ("2", "latest", "1.0.1"):
        tag_existing(upstream, images.tag, tag)
    return images


@pytest.fixture
def skopeo_via(tmp_path, trap):
    """An isolated skopeo whose only way out of 127.0.0.1 is the trap; call it with a
    registries.conf text (or None) and then the command."""
    (tmp_path / "skopeo").mkdir()
    skopeo = Skopeo(tmp_path / "skopeo")
    skopeo.env.update(trap.env)

    def run(registries_conf: str | None, *args: str, check: bool = True):
        conf = tmp_path / "registries.conf"
        conf.write_text(registries_conf or "")
        # skopeo ignores CONTAINERS_REGISTRIES_CONF: the file is given on its command line.
        return skopeo.run("--registries-conf", str(conf), *args, check=check)

    return run


def test_inspect_raw_naming_the_mirror(mirror, upstream, trap, sk_images, skopeo_via):
    index = sk_images.multi
    watch = Watch.start(mirror, upstream, trap)
    base = f"docker://{mirror.host}/library/sk-multi"
    raw = skopeo_via(None, "inspect", "--tls-verify=false", "--raw", f"{base}:1").stdout
    assert raw == index.manifest
    for child in index.children:
        raw = skopeo_via(None, "inspect", "--tls-verify=false", "--raw", f"{base}@{child.digest}").stdout
        assert raw == child.manifest and sha256_digest(raw) == child.digest
    arm = index.child("arm64")
    config = skopeo_via(
        None, "inspect", "--tls-verify=false", "--raw", "--config", "--override-arch", "arm64", f"{base}:1"
    ).stdout
    assert config == arm.config.data
    assert trap.requests == []
    assert [e for e in watch.upstream_entries() if e.user_agent.startswith(AGENT)] == []
    assert {e.path for e in watch.mirror_entries() if e.user_agent.startswith(AGENT)} >= {
        "/v2/library/sk-multi/manifests/1",
        f"/v2/library/sk-multi/manifests/{arm.digest}",
        f"/v2/library/sk-multi/blobs/{arm.config.digest}",
    }


def test_inspect_and_list_tags_naming_the_mirror(mirror, upstream, trap, sk_images, skopeo_via):
    image = sk_images.tag
    watch = Watch.start(mirror, upstream, trap)
    for name in ("library/sk-tag", "sk-tag"):  # a one-component name means library/<name>
        listed = json.loads(
            skopeo_via(None, "list-tags", "--tls-verify=false", f"docker://{mirror.host}/{name}").stdout
        )
        assert listed["Repository"] == f"{mirror.host}/{name}"
        assert sorted(listed["Tags"]) == ["1", "1.0.1", "2", "latest"]
        inspected = json.loads(
            skopeo_via(None, "inspect", "--tls-verify=false", f"docker://{mirror.host}/{name}:2").stdout
        )
        assert inspected["Digest"] == image.digest
        assert sorted(inspected["RepoTags"]) == ["1", "1.0.1", "2", "latest"]
        assert inspected["Layers"] == [layer.digest for layer in image.layers]
    assert trap.requests == []
    tag_lists = [e for e in watch.mirror_entries() if e.user_agent.startswith(AGENT) and e.path.endswith("/tags/list")]
    assert {e.path for e in tag_lists} == {"/v2/library/sk-tag/tags/list", "/v2/sk-tag/tags/list"}
    assert {e.status for e in tag_lists} == {200}
    assert [e for e in watch.upstream_entries() if e.user_agent.startswith(AGENT)] == []


def test_copy_and_inspect_through_registries_conf(mirror, upstream, trap, sk_images, skopeo_via, tmp_path):
    image = sk_images.digest
    conf = client_config("registries.conf", mirror.host)
    watch = Watch.start(mirror, upstream, trap)
    skopeo_via(conf, "copy", "docker://docker.io/library/sk-digest:1", f"dir:{tmp_path / 'out'}")
    assert (tmp_path / "out" / "manifest.json").read_bytes() == image.manifest
    for blob in image.blobs:
        assert (tmp_path / "out" / blob.digest.split(":")[1]).read_bytes() == blob.data
    raw = skopeo_via(conf, "inspect", "--raw", "docker://docker.io/library/sk-digest:1").stdout
    assert sha256_digest(raw) == image.digest
    inspected = json.loads(
        skopeo_via(conf, "inspect", "--no-tags", f"docker://docker.io/sk-digest@{image.digest}").stdout
    )
    assert inspected["Digest"] == image.digest
    watch.assert_through_mirror(AGENT, blob_digests(image), cold=True)


def test_mirror_failures_and_commands_that_ignore_mirrors_go_to_docker_io(
    mirror, upstream, trap, sk_images, skopeo_via, tmp_path
):
    """What the manual says: with the mirror down (or without the image) skopeo tries Docker Hub;
    `list-tags` and a plain `inspect` (which lists tags) go to Docker Hub whatever the mirrors.
    Those attempts land in the trap, so they fail here."""
    attempts = {
        "mirror down": (
            client_config("registries.conf", f"127.0.0.1:{free_port()}"),
            ["copy", "docker://docker.io/library/sk-tag:1", f"dir:{tmp_path / 'down'}"],
        ),
        "image unknown": (
            client_config("registries.conf", mirror.host),
            ["copy", "docker://docker.io/library/sk-absent:1", f"dir:{tmp_path / 'absent'}"],
        ),
        "list-tags": (
            client_config("registries.conf", mirror.host),
            ["list-tags", "docker://docker.io/library/sk-tag"],
        ),
        "inspect with tags": (
            client_config("registries.conf", mirror.host),
            ["inspect", "docker://docker.io/library/sk-tag:1"],
        ),
    }
    for what, (conf, args) in attempts.items():
        trap.clear()
        failed = skopeo_via(conf, *args, check=False)
        assert failed.returncode != 0, what
        assert DOCKER_HUB in trap.hosts, (what, failed.stderr, trap.requests)
