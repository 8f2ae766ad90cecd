"""The project's image, built from its Dockerfile and run the way `registry:2` is run:

    docker run -d --restart=always --name=through-cache -e REGISTRY_PROXY_REMOTEURL=... \\
        -e REGISTRY_PROXY_USERNAME=... -e REGISTRY_PROXY_PASSWORD=... mirrorsite

with `--network host` and `REGISTRY_HTTP_ADDR` in place of `-p 80:5000` (every address of the
tests stays on loopback). The base is a stand-in for python:3.11-slim-bookworm made from
Debian's packages (tests/support/docker_image.py); the build runs once per session. And
docker-compose.yml, checked by Debian's docker-compose (its services' images cannot be had
here, so they are not started).
"""

from __future__ import annotations

from collections.abc import Iterator
import json
import subprocess
import time

import pytest
import requests

from tests.support.clients import Watch, blob_digests
from tests.support.docker_image import build_image
from tests.support.dockerd import Dockerd
from tests.support.images import push_image
from tests.support.manual import client_config
from tests.support.mirror import PROJECT_ROOT
from tests.support.upstream_registry import free_port

AGENT = "docker/"


@pytest.fixture(scope="session")
def mirrorsite_image(dockerd: Dockerd) -> str:
    """The project's image, built once per session and tagged as the documentation names it."""
    build_image(dockerd, "mirrorsite:test")
    dockerd.docker("tag", "mirrorsite:test", "mirrorsite")
    return "mirrorsite"


class Container:
    """A container of the image, started with the seed's command line (plus what is given)."""

    def __init__(self, dockerd: Dockerd, upstream, *extra: str, port: int | None = None):
        self.dockerd, self.port = dockerd, port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.started = time.monotonic()
        dockerd.docker(
            "run",
            "-d",
            "--restart=always",
            "--name=through-cache",
            "--network",
            "host",
            "-e",
            f"REGISTRY_HTTP_ADDR={self.host}",
            "-e",
            f"REGISTRY_PROXY_REMOTEURL={upstream.url}",
            "-e",
            f"REGISTRY_PROXY_USERNAME={upstream.username}",
            "-e",
            f"REGISTRY_PROXY_PASSWORD={upstream.password}",
            *extra,
            "mirrorsite",
        )
        self.log_path = dockerd.workdir / f"through-cache-{self.port}.log"
        self.ready_after = self.wait_for_v2()

    def wait_for_v2(self, timeout: float = 90) -> float:
        """Seconds from `docker run` to the first 200 on /v2/."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    return time.monotonic() - self.started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the container did not serve /v2/:\n{self.logs()}")

    def logs(self) -> str:
        done = self.dockerd.docker("logs", "through-cache", check=False)
        return done.stdout + done.stderr

    def inspect(self) -> dict:
        [container] = json.loads(self.dockerd.docker("container", "inspect", "through-cache").stdout)
        return container

    def save_log(self) -> None:
        """The container's log in the access-log format Watch reads (gunicorn writes to stdout)."""
        self.log_path.write_text(self.logs())

    def remove(self) -> None:
        self.dockerd.docker("rm", "-f", "through-cache", check=False)


@pytest.fixture
def containers(dockerd) -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()
    dockerd.docker("volume", "prune", "-f", check=False)


def watch(container: Container, upstream, trap) -> Watch:
    """Marks in the container's access log (`docker logs`, saved to a file) and the upstream's."""
    container.save_log()
    return Watch.start(container, upstream, trap)


def test_the_image(mirrorsite_image, dockerd):
    [image] = json.loads(dockerd.docker("image", "inspect", mirrorsite_image).stdout)
    config = image["Config"]
    assert config["User"] == "mirrorsite"
    assert config["Cmd"] == ["python", "manage.py", "serve"]
    assert "/data" in config["Volumes"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert any(e.startswith("PATH=/opt/mirrorsite/bin:") for e in config["Env"])
    # The virtual environment is the project's; no compiler, no pip in the final image.
    probe = dockerd.docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "sh",
        mirrorsite_image,
        "-c",
        "id -un; command -v python; for tool in gcc cc; do command -v $tool || echo no-$tool; done;"
        " ls /opt/mirrorsite/bin/pip 2>/dev/null || echo no-pip-in-venv;"
        " python -c 'import mirrorsite, registry, sys; print(sys.prefix)'",
    ).stdout.split()
    assert probe == ["mirrorsite", "/opt/mirrorsite/bin/python", "no-gcc", "no-cc", "no-pip-in-venv", "/opt/mirrorsite"]
    size = int(image["Size"])
    print(f"\nimage size: {size / 1e6:.0f} MB")


def test_the_seed_command_line(mirrorsite_image, dockerd, dockerd_trap, mirror, upstream, containers):
    """The seed's `docker run` line with our image; dockerd pulls through the container; the
    data volume outlives `docker rm` and a new container serves the cache it left."""
    image = push_image(upstream, "library/dk-container", "1", layer_sizes=[64 * 1024, 300 * 1024], seed=9500)
    container = Container(dockerd, upstream)
    containers.append(container)
    print(f"\nfrom `docker run` to 200 on /v2/: {container.ready_after:.1f} s")
    state = container.inspect()
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "always"
    [volume] = [m for m in state["Mounts"] if m["Destination"] == "/data"]

    # Its HEALTHCHECK command, run in the container, reaches /healthz.
    test = state["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    dockerd.docker("exec", "through-cache", *test[1:])

    dockerd.remove_all_images_but(mirrorsite_image)
    dockerd.reload(client_config("daemon.json", container.host))
    try:
        first = watch(container, upstream, dockerd_trap)
        dockerd.pull("dk-container:1")
        assert f"dk-container@{image.digest}" in dockerd.repo_digests("dk-container:1")
        container.save_log()
        first.assert_through_mirror(AGENT, blob_digests(image), cold=True)

        container.remove()
        volumes = dockerd.docker("volume", "ls", "-q").stdout.split()
        assert volume["Name"] in volumes, "the data volume outlives `docker rm`"
        again = Container(dockerd, upstream, "-v", f"{volume['Name']}:/data", port=container.port)
        containers.append(again)
        print(f"a new container on the same volume, to 200 on /v2/: {again.ready_after:.1f} s")
        dockerd.docker("rmi", "dk-container:1")
        second = watch(again, upstream, dockerd_trap)
        dockerd.pull("dk-container:1")
        assert f"dk-container@{image.digest}" in dockerd.repo_digests("dk-container:1")
        again.save_log()
        second.assert_through_mirror(AGENT, blob_digests(image), cold=False)  # the cache the first one left
    finally:
        dockerd.reload(client_config("daemon.json", mirror.host))
        dockerd.remove_all_images_but(mirrorsite_image)


# --- docker-compose.yml, checked by Compose itself --------------------------------------------

COMPOSE_SECRETS = {
    "DJANGO_SECRET_KEY": "d" * 50,
    "MIRROR_SECRET_KEY": "m" * 50,
    "MINIO_ROOT_PASSWORD": "minio-password",
}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
        timeout=60,
    )


def test_compose_accepts_the_documented_variables():
    documented = {
        **COMPOSE_SECRETS,
        "MIRROR_WEB_REPLICAS": "4",
        "MIRROR_WORKER_REPLICAS": "3",
        "MIRROR_PORT": "5001",
        "REGISTRY_PROXY_USERNAME": "hub-user",
        "REGISTRY_PROXY_PASSWORD": "hub-token",
    }
    done = compose_config(documented)
    assert done.returncode == 0, done.stderr
    import yaml

    config = yaml.safe_load(done.stdout)
    web = config["services"]["web"]
    assert web["environment"]["DJANGO_SECRET_KEY"] == COMPOSE_SECRETS["DJANGO_SECRET_KEY"]
    assert web["environment"]["REGISTRY_PROXY_USERNAME"] == "hub-user"
    assert web["deploy"]["replicas"] == 4
    assert config["services"]["worker"]["deploy"]["replicas"] == 3
    assert config["services"]["lb"]["ports"][0]["published"] in (5001, "5001")


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_without_a_required_secret(missing):
    done = compose_config({k: v for k, v in COMPOSE_SECRETS.items() if k != missing})
    assert done.returncode != 0
    assert f"set {missing}" in done.stderr
