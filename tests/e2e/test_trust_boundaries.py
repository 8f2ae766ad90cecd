"""The mirror trusts nothing an upstream does not own: a real mirror process in front of
scripted hostile registries (tests/support/fake_registry.py).

1. Markup: a manifest that says it is `text/html` (or SVG, or a media type with a line break,
   or 5,000 characters long) is refused with 502 MANIFEST_INVALID and never stored; every
   /v2/ answer carries `nosniff` and a sandboxing CSP.
2. Redirects: followed for blobs only (a loopback upstream may send them to another loopback
   port, a CDN stand-in), never for manifests, tag lists or tokens, never HTTPS → HTTP.
3. Token realms: account credentials (or anything) go only to a realm on the upstream's own
   host, or on a listed realm host over HTTPS; start-up verification says why it refused.

The `Listener` stands in for an internal service or a foreign token realm: it must receive
nothing, ever.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
import json
from pathlib import Path
import time

import pytest
import requests

from tests.support.fake_registry import Answer, FakeRegistry, Listener, answer
from tests.support.images import MANIFEST_ACCEPT, build_image
from tests.support.mirror import MirrorProcess
from tests.support.tls import ServerCertificate, make_server_certificate

KB = 1024
SECURITY = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
USER, PASSWORD = "bot", "bot-password-for-hostile-tests"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
IMAGE = build_image("library/good", "1", layer_sizes=[8 * KB], seed=9700)
SHIPPED = build_image("library/shipped", "1", layer_sizes=[8 * KB], seed=9701)


class World:
    """The registries the mirror is pointed at, and the listener nothing may reach."""

    def __init__(self, certificate: ServerCertificate):
        self.listener = Listener().start()
        self.plain = FakeRegistry().start()  # the default upstream, anonymous
        self.cdn = FakeRegistry().start()  # another loopback port, where blobs may go
        self.token_jump = FakeRegistry().start()  # its token service redirects to the listener
        self.foreign = FakeRegistry().start()  # its realm is on another host (the listener)
        self.secure = FakeRegistry(tls=certificate).start()  # HTTPS: its blobs redirect to HTTP
        self.listed = FakeRegistry(tls=certificate).start()  # HTTPS, realm on a listed host
        self.realm = FakeRegistry(tls=certificate).start()  # that realm: https://localhost:<port>
        self.all = [
            self.listener,
            self.plain,
            self.cdn,
            self.token_jump,
            self.foreign,
            self.secure,
            self.listed,
            self.realm,
        ]

    def stop(self) -> None:
        for server in self.all:
            server.stop()


def bearer_only(registry: FakeRegistry, realm: str, token: str, then: Answer):
    """A route that wants `Bearer <token>` from `realm`."""

    def route(seen):
        if seen.headers.get("Authorization") != f"Bearer {token}":
            return answer(401, WWW_Authenticate=f'Bearer realm="{realm}",service="hostile"')
        return then

    return route


def token_service(token: str, anonymous: str | None = None):
    """A token realm: `token` for the account's Basic credentials, `anonymous` (if any) for none."""

    def route(seen):
        if anonymous is not None and "Authorization" not in seen.headers:
            return answer(200, {"token": anonymous, "expires_in": 300})
        if seen.headers.get("Authorization") != BASIC:
            return answer(401, WWW_Authenticate='Basic realm="hostile"')
        return answer(200, {"token": token, "expires_in": 300})

    return route


def upstreams_file(directory: Path, world: World, certificate: ServerCertificate) -> Path:
    account = f"    accounts:\n      - username: {USER}\n        password: {PASSWORD}\n"
    tls = f"    ca_bundle: {certificate.ca_cert}\n"
    path = directory / "upstreams.yaml"
    path.write_text(
        "upstreams:\n"
        f"  - url: {world.token_jump.url}\n    name: token-jump\n    alias: tokenjump\n{account}"
        f"  - url: {world.foreign.url}\n    name: foreign\n    alias: foreign\n{account}"
        f"  - url: {world.secure.url}\n    name: secure\n    alias: secure\n{tls}"
        f"  - url: {world.listed.url}\n    name: listed\n    alias: listed\n    realm_hosts: [localhost]\n{tls}{account}"
    )
    return path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> ServerCertificate:
    return make_server_certificate(tmp_path_factory.mktemp("hostile-tls"), dns_names=("localhost",))


@pytest.fixture(scope="module")
def world(certificate) -> Iterator[World]:
    found = World(certificate)
    listener = found.listener
    # 2: a token service that redirects; 3: a realm on another host name (the listener), and
    # a realm on a listed host over HTTPS.
    jump_realm = f"{found.token_jump.url}/token"
    found.token_jump.script("GET", "/v2/", bearer_only(found.token_jump, jump_realm, "never", answer(200, {})))
    # The mirror holds an account for these, so it first asks (anonymously) whether a client
    # may see the repository (access/visibility.py): a tag list, behind the same challenge.
    for path in ("/v2/app/manifests/1", "/v2/app/tags/list"):
        found.token_jump.script("GET", path, bearer_only(found.token_jump, jump_realm, "never", answer(200, {})))
    found.token_jump.script("GET", "/token", answer(307, Location=f"{listener.url}/token"))
    foreign_realm = f"http://localhost:{listener.port}/token"
    found.foreign.script("GET", "/v2/", bearer_only(found.foreign, foreign_realm, "never", answer(200, {})))
    for path in ("/v2/app/manifests/1", "/v2/app/tags/list"):
        found.foreign.script("GET", path, bearer_only(found.foreign, foreign_realm, "never", answer(200, {})))
    listed_realm = f"https://localhost:{found.realm.port}/token"
    found.realm.script("GET", "/token", token_service("LISTED", anonymous="ANONYMOUS"))
    found.listed.script("GET", "/v2/", bearer_only(found.listed, listed_realm, "LISTED", answer(200, {})))
    shipped = answer(200, SHIPPED.manifest, Content_Type=SHIPPED.media_type, Docker_Content_Digest=SHIPPED.digest)
    found.listed.script("GET", "/v2/app/manifests/1", bearer_only(found.listed, listed_realm, "LISTED", shipped))
    # Public: an anonymous client may list it (the mirror's visibility check asks so, with an
    # anonymous token from the same listed realm).
    listing = answer(200, {"name": "app", "tags": ["1"]})
    found.listed.script("GET", "/v2/app/tags/list", bearer_only(found.listed, listed_realm, "ANONYMOUS", listing))
    yield found
    found.stop()


@pytest.fixture(scope="module")
def mirror(world, certificate, tmp_path_factory) -> Iterator[MirrorProcess]:
    directory = tmp_path_factory.mktemp("hostile-mirror")
    process = MirrorProcess(
        directory / "data",
        world.plain.url,
        MIRROR_UPSTREAMS=str(upstreams_file(directory, world, certificate)),
        MIRROR_EMBEDDED_WORKERS="false",  # start-up verification runs in `serve` itself
    ).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def nothing_reaches_the_listener(world):
    yield
    assert world.listener.requests == [], "the listener was reached"


def get(mirror: MirrorProcess, path: str, method: str = "GET") -> requests.Response:
    return requests.request(method, f"{mirror.url}{path}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30)


def error_code(response: requests.Response) -> str:
    return response.json()["errors"][0]["code"]


def stored_manifests(mirror: MirrorProcess, repository: str) -> int:
    return mirror.query(
        "SELECT COUNT(*) FROM registry_manifest m JOIN registry_repository r ON m.repository_id = r.id WHERE r.name = ?",
        repository,
    )[0][0]


# --- 1. data, never markup -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "repository, media_type",
    [
        ("html", "text/html"),
        ("svg", "image/svg+xml"),
        ("crlf", "application/vnd.oci.image.manifest.v1+json\r\nX-A: 1"),
        ("long", "application/" + "x" * 5000),
    ],
    ids=["text/html", "image/svg+xml", "CR/LF", "5,000 characters"],
)
def test_a_manifest_of_another_media_type_is_refused_and_never_stored(mirror, world, repository, media_type):
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "x": "<script>alert(document.cookie)</script>"})
    world.plain.script("GET", f"/v2/library/{repository}/manifests/1", answer(200, body))
    for _attempt in range(2):
        refused = get(mirror, f"/v2/{repository}/manifests/1")
        assert refused.status_code == 502, refused.text
        assert error_code(refused) == "MANIFEST_INVALID"
        assert refused.headers["Content-Type"] == "application/json"
        assert {name: refused.headers.get(name) for name in SECURITY} == SECURITY
    assert len(world.plain.seen(f"/v2/library/{repository}/manifests/1", "GET")) == 2, "nothing cached: asked again"
    assert stored_manifests(mirror, f"library/{repository}") == 0


def test_a_manifest_sent_as_html_is_refused(mirror, world):
    world.plain.script(
        "GET",
        "/v2/library/sent-html/manifests/1",
        answer(200, b"<html><script>alert(1)</script></html>", Content_Type="text/html"),
    )
    refused = get(mirror, "/v2/sent-html/manifests/1")
    assert (refused.status_code, error_code(refused)) == (502, "MANIFEST_INVALID")
    assert stored_manifests(mirror, "library/sent-html") == 0


def test_every_kind_of_v2_answer_is_never_sniffed_nor_run(mirror, world):
    world.plain.serve("library/good", IMAGE)
    layer = IMAGE.layers[0]
    answers = {
        "manifest": get(mirror, "/v2/good/manifests/1"),
        "manifest HEAD": get(mirror, "/v2/good/manifests/1", "HEAD"),
        "blob": get(mirror, f"/v2/good/blobs/{layer.digest}"),  # a miss, streamed
        "blob again": get(mirror, f"/v2/good/blobs/{layer.digest}"),  # a hit, from the store
        "blob HEAD": get(mirror, f"/v2/good/blobs/{layer.digest}", "HEAD"),
        "unknown manifest": get(mirror, "/v2/good/manifests/missing"),
        "invalid name": get(mirror, "/v2/BAD/manifests/1"),
        "push": get(mirror, "/v2/good/manifests/1", "PUT"),
        "base": get(mirror, "/v2/"),
        "no slash": requests.get(f"{mirror.url}/v2", timeout=30, allow_redirects=False),
        "unknown endpoint": get(mirror, "/v2/good/nothing-here"),
    }
    assert answers["manifest"].content == IMAGE.manifest and answers["blob"].content == layer.data
    assert answers["manifest"].headers["Content-Type"] == IMAGE.media_type
    assert answers["blob again"].content == layer.data
    assert answers["unknown manifest"].status_code == 404 and answers["push"].status_code == 405
    for kind, response in answers.items():
        assert {name: response.headers.get(name) for name in SECURITY} == SECURITY, kind


# --- 2. redirects ----------------------------------------------------------------------------------
def test_a_redirected_manifest_by_tag_is_refused_and_never_followed(mirror, world):
    world.plain.script("GET", "/v2/library/jump/manifests/1", answer(307, Location=f"{world.listener.url}/v1/secrets"))
    refused = get(mirror, "/v2/jump/manifests/1")
    assert refused.status_code == 502, refused.text
    assert "redirects for blobs only" in refused.json()["errors"][0]["message"]
    assert stored_manifests(mirror, "library/jump") == 0


def test_a_redirected_tag_list_is_refused_and_never_followed(mirror, world):
    world.plain.script("GET", "/v2/library/jump/tags/list", answer(307, Location=f"{world.listener.url}/v1/secrets"))
    refused = get(mirror, "/v2/jump/tags/list")
    assert refused.status_code == 502, refused.text


def test_a_redirected_token_request_is_refused_at_start_up_and_on_a_pull(mirror, world):
    status, message = verification(mirror, "token-jump")
    assert status == "refused" and "token service redirected" in message
    refused = get(mirror, "/v2/tokenjump/app/manifests/1")
    assert refused.status_code == 502, refused.text
    assert world.token_jump.seen("/token"), "the token service was asked, its redirect refused"


def test_a_blob_redirect_to_another_loopback_port_is_followed(mirror, world):
    image = build_image("library/cdn", "1", layer_sizes=[8 * KB], seed=9702)
    world.plain.serve("library/cdn", image)
    layer = image.layers[0]
    world.cdn.script("GET", "/cdn/layer", answer(200, layer.data))
    world.plain.script(
        "GET", f"/v2/library/cdn/blobs/{layer.digest}", answer(307, Location=f"{world.cdn.url}/cdn/layer?sig=x")
    )
    assert get(mirror, "/v2/cdn/manifests/1").status_code == 200
    fetched = get(mirror, f"/v2/cdn/blobs/{layer.digest}")
    assert fetched.status_code == 200 and fetched.content == layer.data
    (seen,) = world.cdn.seen("/cdn/layer")
    assert "Authorization" not in seen.headers


def test_a_blob_redirect_from_https_to_http_is_refused(mirror, world):
    image = build_image("library/down", "1", layer_sizes=[8 * KB], seed=9703)
    world.secure.serve("down", image)
    layer = image.layers[0]
    world.cdn.script("GET", "/cdn/plain", answer(200, layer.data))
    world.secure.script("GET", f"/v2/down/blobs/{layer.digest}", answer(307, Location=f"{world.cdn.url}/cdn/plain"))
    assert get(mirror, "/v2/secure/down/manifests/1").status_code == 200, "the HTTPS upstream itself is fine"
    refused = get(mirror, f"/v2/secure/down/blobs/{layer.digest}")
    assert refused.status_code == 502, refused.text
    assert "HTTPS to plain HTTP" in refused.json()["errors"][0]["message"]
    assert world.cdn.seen("/cdn/plain") == []


# --- 3. token realms -------------------------------------------------------------------------------
def verification(mirror: MirrorProcess, upstream: str) -> tuple[str, str]:
    """The verification status and message of the upstream's account, once start-up verified it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = mirror.query(
            "SELECT a.verification, a.verification_message FROM registry_upstreamaccount a "
            "JOIN registry_upstream u ON a.upstream_id = u.id WHERE u.name = ? AND a.username = ?",
            upstream,
            USER,
        )
        if rows and rows[0][0]:
            return rows[0]
        time.sleep(0.2)
    raise AssertionError(f"{upstream}'s account was not verified at start-up")


def test_a_realm_on_another_host_gets_no_credentials_not_even_at_start_up(mirror, world):
    status, message = verification(mirror, "foreign")
    assert status == "refused"
    assert "localhost" in message and "no credentials sent" in message
    ready = requests.get(f"{mirror.url}/readyz", timeout=30).json()
    # /readyz names accounts by id only (no user names to whoever may read it).
    assert [account["verification"] for account in ready["upstreams"]["foreign"]["accounts"].values()] == ["refused"]
    assert USER not in str(ready)
    assert "no credentials sent" in ready["upstreams"]["foreign"]["message"]
    refused = get(mirror, "/v2/foreign/app/manifests/1")
    assert refused.status_code == 502, refused.text
    assert "no credentials sent" in refused.json()["errors"][0]["message"]


def test_a_realm_on_a_listed_host_over_https_gets_the_credentials(mirror, world):
    assert verification(mirror, "listed") == ("ok", "token issued")
    pulled = get(mirror, "/v2/listed/app/manifests/1")
    assert pulled.status_code == 200 and pulled.content == SHIPPED.manifest
    asked = [seen.headers.get("Authorization") for seen in world.realm.seen("/token")]
    # The account's token, and the visibility check's anonymous one: both from the listed realm.
    assert BASIC in asked and None in asked and set(asked) <= {BASIC, None}


def test_blob_hits_sent_by_nginx_are_sandboxed_too(world, tmp_path):
    """Behind nginx (deploy/nginx-mirror.conf), a hit is sent by nginx itself (X-Accel-Redirect),
    which keeps few of the mirror's headers: the example adds these."""
    from tests.support.nginx import NginxFront

    image = build_image("library/front", "1", layer_sizes=[8 * KB], seed=9704)
    world.plain.serve("library/front", image)
    layer = image.layers[0]
    mirror = MirrorProcess(tmp_path / "data", world.plain.url, MIRROR_X_ACCEL_REDIRECT="/_mirror_blobs/").start()
    try:
        nginx = NginxFront(tmp_path / "nginx", mirror.host, tmp_path / "data" / "blobs").start()
        try:
            miss = requests.get(f"{nginx.url}/v2/front/blobs/{layer.digest}", timeout=30)
            hit = requests.get(f"{nginx.url}/v2/front/blobs/{layer.digest}", timeout=30)
            assert miss.content == hit.content == layer.data
            assert requests.get(f"{mirror.url}/v2/front/blobs/{layer.digest}", timeout=30).headers["X-Accel-Redirect"]
            for response in (miss, hit):
                assert {name: response.headers.get(name) for name in SECURITY} == SECURITY
        finally:
            nginx.stop()
    finally:
        mirror.stop()
