"""Which upstream a request goes to: containerd's ?ns=, path aliases and registry-host
prefixes, the default; unknown ones are a clear 404; and no request ever makes the mirror
connect to a host that is not a configured upstream."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from registry.models import Repository, Upstream
from registry.upstreams import routing

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def upstreams(settings, tmp_path) -> dict[str, Upstream]:
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REGISTRY_PROXY_REMOTEURL = "https://registry-1.docker.io"  # never contacted below
    settings.MIRROR_UPSTREAM_HOSTS = []
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "auto"
    hub = Upstream.objects.default()
    ghcr = Upstream.objects.create(name="ghcr", url="https://ghcr.io", hosts="ghcr.io", alias="ghcr")
    quay = Upstream.objects.create(name="quay", url="https://quay.io", hosts="quay.io, quay.example:8443")
    return {"hub": hub, "ghcr": ghcr, "quay": quay}


@pytest.mark.parametrize(
    "name,ns,upstream,repository",
    [
        ("library/alpine", None, "hub", "library/alpine"),
        ("alpine", None, "hub", "alpine"),
        ("bitnami/redis", None, "hub", "bitnami/redis"),
        ("ghcr/owner/image", None, "ghcr", "owner/image"),
        ("ghcr.io/owner/image", None, "ghcr", "owner/image"),
        ("quay.io/org/app", None, "quay", "org/app"),
        ("quay.example:8443/org/app", None, "quay", "org/app"),
        ("docker.io/library/alpine", None, "hub", "library/alpine"),
        ("owner/image", "ghcr.io", "ghcr", "owner/image"),
        ("org/app", "QUAY.IO", "quay", "org/app"),
        ("library/alpine", "docker.io", "hub", "library/alpine"),
        ("library/alpine", "registry-1.docker.io", "hub", "library/alpine"),
        # With ns, the path is the repository as it is, an alias-like first component included.
        ("ghcr/x", "docker.io", "hub", "ghcr/x"),
    ],
)
def test_requests_are_routed(upstreams, name, ns, upstream, repository):
    route = routing.resolve(name, ns)
    assert (route.upstream, route.name) == (upstreams[upstream], repository)
    assert route.namespace == ns


def test_the_default_upstream_answers_for_docker_hub_names(upstreams):
    assert upstreams["hub"].host_names() == [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "registry.hub.docker.com",
    ]


def test_ns_is_echoed_and_unknown_ones_are_a_clear_404(client, upstreams):
    known = client.get(f"/v2/owner/image/referrers/{DIGEST}?ns=ghcr.io")
    assert known.status_code == 200 and known["OCI-Namespace"] == "ghcr.io"
    assert "OCI-Namespace" not in client.get(f"/v2/owner/image/referrers/{DIGEST}")
    for path in (
        "/v2/owner/image/manifests/1?ns=gcr.io",
        f"/v2/owner/image/blobs/{DIGEST}?ns=gcr.io",
        "/v2/owner/image/tags/list?ns=gcr.io",
        "/v2/_catalog?ns=gcr.io",
        "/v2/gcr.io/owner/image/manifests/1",
        "/v2/localhost/owner/image/manifests/1",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        error = json.loads(response.content)["errors"][0]
        assert error["code"] == "NAME_UNKNOWN", path
        assert error["message"] == "no upstream of this mirror answers for this registry", path
        assert error["detail"]["registry"] in ("gcr.io", "localhost"), path
        assert "OCI-Namespace" not in response


def test_the_catalog_of_each_upstream(client, upstreams):
    Repository.objects.create(upstream=upstreams["hub"], name="library/alpine")
    Repository.objects.create(upstream=upstreams["ghcr"], name="owner/image")
    assert client.get("/v2/_catalog").json() == {"repositories": ["library/alpine"]}
    assert client.get("/v2/_catalog?ns=ghcr.io").json() == {"repositories": ["owner/image"]}


class Listener:
    """A TCP listener on loopback that counts the connections it is offered."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


def test_no_request_reaches_a_host_that_is_not_configured(client, upstreams, listener):
    port = listener.port
    tricks = [
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"[::1]:{port}",
        f"127.1:{port}",
        f"2130706433:{port}",
        f"0x7f000001:{port}",
        f"http://127.0.0.1:{port}",
        f"//127.0.0.1:{port}",
        f"user:pw@127.0.0.1:{port}",
        f"docker.io@127.0.0.1:{port}",
        f"ghcr.io@127.0.0.1:{port}",
        f"ghcr.io:{port}",
        f"127.0.0.1:{port}/v2",
        f"127.0.0.1:{port}#ghcr.io",
        f"ghcr.io%00.127.0.0.1:{port}",
        f"127.0.0.1%3A{port}",
        f" 127.0.0.1:{port}",
    ]
    paths = []
    for trick in tricks:
        for endpoint in ("manifests/1", f"blobs/{DIGEST}", "tags/list"):
            paths.append(f"/v2/library/alpine/{endpoint}?ns={trick}")
            paths.append(f"/v2/{trick}/library/alpine/{endpoint}")
        paths.append(f"/v2/_catalog?ns={trick}")
    for path in paths:
        for method in ("get", "head"):
            response = getattr(client, method)(path)
            assert response.status_code in (400, 404), (method, path, response.status_code)
    assert listener.accepted == 0, "a request made the mirror connect to a host of the client's choosing"
    assert Upstream.objects.count() == 3, "and no upstream was made up for it"
