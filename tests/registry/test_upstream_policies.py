"""Each upstream's own settings, called through the cache: repository allow and deny
patterns, tag TTL, stale policy and maximum staleness, timeouts, TLS, the connection limit,
and the short memory of upstream 404s."""

from __future__ import annotations

from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

from django.utils import timezone
import pytest

from registry import memory, oci
from registry.models import Tag, Upstream
from registry.proxy import blobs, listings, manifests, upstream_calls
from registry.upstreams.client import UpstreamUnavailable
from registry.upstreams.routing import Route
from tests.support.fake_registry import FakeRegistry, hub_like
from tests.support.images import build_image
from tests.support.tls import make_server_certificate

pytestmark = pytest.mark.django_db

IMAGE = build_image("library/app", "1", layer_sizes=[4 * 1024], seed=8200)
TAG = oci.parse_reference("1")


@pytest.fixture
def mirror_settings(settings, tmp_path):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.MIRROR_TAG_TTL = 3600
    settings.MIRROR_TAG_MAX_STALENESS = 30 * 24 * 3600
    settings.MIRROR_NEGATIVE_CACHE_TTL = 60
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 1
    return settings


@pytest.fixture
def double(mirror_settings):
    with hub_like(IMAGE) as registry:
        yield registry


def upstream_of(url: str, **fields) -> Upstream:
    return Upstream.objects.create(name="up", url=url, library_prefix=True, **fields)


def asked(registry: FakeRegistry, method: str | None = None) -> list[str]:
    """What reached the registry past authentication: `METHOD path`."""
    return [
        f"{r.method} {r.path}"
        for r in registry.requests
        if r.path.startswith("/v2/") and r.status != 401 and (method is None or r.method == method)
    ]


def expire_tags() -> None:
    Tag.objects.update(validated_at=timezone.now() - timedelta(hours=2))
    memory.forget_all()


def test_allow_and_deny_patterns_are_kept_without_asking_the_upstream(double):
    upstream = upstream_of(double.url, allow_repositories="library/*\nteam/*", deny_repositories="library/secret*")
    assert manifests.get_manifest(Route(upstream, "app"), TAG).digest == IMAGE.digest  # library/app
    digest = oci.parse_digest(IMAGE.layers[0].digest)
    for call in (
        lambda: manifests.get_manifest(Route(upstream, "other/app"), TAG),
        lambda: manifests.get_manifest(Route(upstream, "library/secret-stuff"), TAG),
        lambda: blobs.fetch_blob(Route(upstream, "other/app"), digest),
        lambda: blobs.stat_blob(Route(upstream, "other/app"), digest),
        lambda: listings.list_tags(Route(upstream, "other/app"), None, None),
    ):
        with pytest.raises(oci.Denied):
            call()
    assert asked(double) == ["GET /v2/library/app/manifests/1"]


@pytest.mark.parametrize("upstream_ttl,global_ttl,heads", [(0, 3600, 2), (3600, 0, 0), (None, 0, 2), (None, 3600, 0)])
def test_the_tag_ttl_of_the_upstream_wins(double, mirror_settings, upstream_ttl, global_ttl, heads):
    mirror_settings.MIRROR_TAG_TTL = global_ttl
    upstream = upstream_of(double.url, tag_ttl=upstream_ttl)
    for _ in range(3):
        manifests.get_manifest(Route(upstream, "app"), TAG)
    assert len(asked(double, "HEAD")) == heads
    assert len(asked(double, "GET")) == 1


def test_stale_policy_and_maximum_staleness(double):
    serve = upstream_of(double.url, alias="serve")
    never = Upstream.objects.create(name="never", url=double.url + "/", stale_policy=Upstream.StalePolicy.NEVER)
    short = Upstream.objects.create(name="short", url=double.url + "//", max_staleness=3600)
    for upstream in (serve, never, short):
        manifests.get_manifest(Route(upstream, "library/app"), TAG)
    expire_tags()
    for upstream in (serve, never, short):  # the upstream is gone
        Upstream.objects.filter(pk=upstream.pk).update(url=f"http://127.0.0.1:9/{upstream.name}")
    serve, never, short = (Upstream.objects.get(pk=u.pk) for u in (serve, never, short))
    assert manifests.get_manifest(Route(serve, "library/app"), TAG).stale_reason
    with pytest.raises(oci.Unavailable):
        manifests.get_manifest(Route(never, "library/app"), TAG)
    with pytest.raises(oci.Unavailable):
        manifests.get_manifest(Route(short, "library/app"), TAG)  # revalidated 2 hours ago: too old for 1 hour


def test_upstream_404s_are_remembered_for_a_while(double, mirror_settings):
    upstream = upstream_of(double.url)
    for _ in range(3):
        with pytest.raises(oci.ManifestUnknown):
            manifests.get_manifest(Route(upstream, "app"), oci.parse_reference("typo"))
    assert asked(double).count("GET /v2/library/app/manifests/typo") == 1
    for tag in ("1", "2", "3"):  # a repository the upstream does not know: any tag of it
        with pytest.raises(oci.NameUnknown):
            manifests.get_manifest(Route(upstream, "missing/app"), oci.parse_reference(tag))
    with pytest.raises(oci.NameUnknown):
        listings.list_tags(Route(upstream, "missing/app"), None, None)
    assert [line for line in asked(double) if "missing" in line] == ["GET /v2/missing/app/manifests/1"]
    assert manifests.get_manifest(Route(upstream, "app"), TAG).digest == IMAGE.digest, "other tags are not affected"

    mirror_settings.MIRROR_NEGATIVE_CACHE_TTL = 0
    for _ in range(2):
        with pytest.raises(oci.ManifestUnknown):
            manifests.get_manifest(Route(upstream, "app"), oci.parse_reference("other-typo"))
    assert asked(double).count("GET /v2/library/app/manifests/other-typo") == 2


def test_the_timeouts_of_the_upstream_apply(mirror_settings):
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            release.wait(10)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror_settings.MIRROR_UPSTREAM_READ_TIMEOUT = 60
        upstream = upstream_of(f"http://127.0.0.1:{server.server_port}", read_timeout=0.3)
        with pytest.raises(UpstreamUnavailable):
            manifests.get_manifest(Route(upstream, "app"), TAG)
        upstream.refresh_from_db()
        assert upstream.reachable is False
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_tls_with_the_upstreams_ca_bundle_or_insecure(mirror_settings, tmp_path):
    certificate = make_server_certificate(tmp_path / "tls", ca_name="Upstream test CA")
    with hub_like(IMAGE, tls=certificate) as registry:
        system_trust = upstream_of(registry.url)
        with pytest.raises(UpstreamUnavailable):
            manifests.get_manifest(Route(system_trust, "app"), TAG)
        with_ca = Upstream.objects.create(
            name="with-ca", url=registry.url + "/", ca_certificates=certificate.ca_cert.read_text()
        )
        assert manifests.get_manifest(Route(with_ca, "app"), TAG).digest == IMAGE.digest
        insecure = Upstream.objects.create(name="insecure", url=registry.url + "//", tls_verify=False)
        assert manifests.get_manifest(Route(insecure, "app"), TAG).digest == IMAGE.digest


@pytest.mark.django_db(transaction=True)  # the requests' threads write beside the test
def test_connections_to_an_upstream_are_limited(mirror_settings):
    lock = threading.Lock()
    state = {"in_flight": 0, "most": 0}
    two_in = threading.Event()
    release = threading.Event()

    class Holding(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            with lock:
                state["in_flight"] += 1
                state["most"] = max(state["most"], state["in_flight"])
                if state["in_flight"] >= 2:
                    two_in.set()
            release.wait(10)
            with lock:
                state["in_flight"] -= 1
            self.send_response(200)
            self.send_header("Content-Length", "7")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Holding)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = upstream_of(f"http://127.0.0.1:{server.server_port}", max_connections=2)
    client = upstream_calls.upstream_client(upstream)
    _ = client.username  # resolve the (anonymous) account before the threads race for it
    sizes: list[int | None] = []
    threads = [
        threading.Thread(
            target=lambda i=i: sizes.append(client.head_blob(f"library/app{i}", IMAGE.layers[0].digest).content_length)
        )
        for i in range(6)
    ]
    try:
        for thread in threads:
            thread.start()
        assert two_in.wait(10), "two requests reach the upstream"
        release.wait(0.5)  # room for more to arrive, if the limit did not hold them back
        with lock:
            held = state["most"]
        release.set()
        for thread in threads:
            thread.join(10)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert held == 2
    assert state["most"] == 2 and sizes == [7] * 6
