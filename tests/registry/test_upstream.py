"""The upstream client against small real HTTP servers on loopback."""

from __future__ import annotations

import base64
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading
import time

import pytest

from registry import oci
from registry.upstreams.client import RateLimit, UpstreamClient, UpstreamUnavailable, parse_challenge, parse_ratelimit

DIGEST = "sha256:" + "b" * 64


class Recorder:
    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []


def serve(handler_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def cdn():
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            recorder.requests.append(("GET", self.path, dict(self.headers)))
            body = b"blob bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = serve(Handler)
    yield f"http://127.0.0.1:{server.server_port}", recorder
    server.shutdown()


@pytest.fixture
def registry(cdn):
    """A registry with Docker Hub's habits: Bearer challenge, token realm, CDN redirect, rate-limit headers."""
    cdn_url, _ = cdn
    recorder = Recorder()
    state = {"token_requests": 0, "slow": 0.0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, headers=(), body=b""):
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def route(self):
            recorder.requests.append((self.command, self.path, dict(self.headers)))
            host = f"http://127.0.0.1:{self.server.server_port}"
            if self.path.startswith("/token"):
                state["token_requests"] += 1
                expected = "Basic " + base64.b64encode(b"bot:s3cret").decode()
                if self.headers.get("Authorization") != expected:
                    return self.reply(401)
                return self.reply(200, [("Content-Type", "application/json")], b'{"token": "T0K", "expires_in": 300}')
            if self.headers.get("Authorization") != "Bearer T0K":
                challenge = f'Bearer realm="{host}/token",service="test",scope="repository:library/x:pull"'
                return self.reply(401, [("WWW-Authenticate", challenge)])
            if state["slow"]:
                time.sleep(state["slow"])
            limits = [("ratelimit-limit", "100;w=21600"), ("ratelimit-remaining", "76;w=21600")]
            if "/blobs/" in self.path:
                return self.reply(307, [("Location", f"{cdn_url}/cdn/blob?sig=abc")] + limits)
            if "/manifests/missing" in self.path:
                return self.reply(404, limits)
            if "/manifests/limited" in self.path:
                return self.reply(429, limits)
            if "/manifests/broken" in self.path:
                return self.reply(500)
            body = b'{"schemaVersion": 2}'
            return self.reply(
                200, [("Docker-Content-Digest", DIGEST), ("Content-Type", oci.OCI_MANIFEST)] + limits, body
            )

        do_GET = route
        do_HEAD = route

    server = serve(Handler)
    yield f"http://127.0.0.1:{server.server_port}", recorder, state
    server.shutdown()


def test_token_auth_redirect_without_authorization_and_ratelimit(registry, cdn):
    url, recorder, state = registry
    _, cdn_recorder = cdn
    seen: list[RateLimit] = []
    client = UpstreamClient(url, "bot", "s3cret", on_ratelimit=seen.append)

    manifest = client.get_manifest("library/x", "latest")
    assert manifest.content == b'{"schemaVersion": 2}'
    assert manifest.digest == DIGEST
    download = client.open_blob("library/x", DIGEST)
    assert b"".join(download.chunks()) == b"blob bytes"
    download.close()
    client.head_manifest("library/x", "latest")

    assert state["token_requests"] == 1, "the token is cached per scope until it expires"
    assert seen[-1] == RateLimit(limit=100, remaining=76, window=21600)
    ((method, path, headers),) = cdn_recorder.requests
    assert path == "/cdn/blob?sig=abc"
    assert "Authorization" not in headers, "credentials never follow a redirect"
    accepts = [h.get("Accept", "") for m, p, h in recorder.requests if "/manifests/" in p]
    assert all(oci.OCI_INDEX in accept and oci.DOCKER_MANIFEST_V2 in accept for accept in accepts)


def test_upstream_statuses_become_registry_errors(registry):
    url, recorder, _ = registry
    client = UpstreamClient(url, "bot", "s3cret")
    with pytest.raises(oci.ManifestUnknown):
        client.get_manifest("library/x", "missing")
    with pytest.raises(oci.TooManyRequests):
        client.head_manifest("library/x", "limited")
    with pytest.raises(UpstreamUnavailable):
        client.head_manifest("library/x", "broken")
    heads = [m for m, p, h in recorder.requests if p.endswith("/manifests/limited") or p.endswith("/manifests/broken")]
    assert set(heads) == {"HEAD"}, "a failed HEAD is never retried as a GET"


def test_wrong_credentials_are_unauthorized(registry):
    url, _, _ = registry
    with pytest.raises(oci.Unauthorized):
        UpstreamClient(url, "bot", "wrong").get_manifest("library/x", "latest")


def test_timeouts_and_unreachable_hosts(registry):
    url, _, state = registry
    state["slow"] = 2.0
    client = UpstreamClient(url, "bot", "s3cret", connect_timeout=0.5, read_timeout=0.3)
    with pytest.raises(UpstreamUnavailable):
        client.get_manifest("library/x", "latest")
    with pytest.raises(UpstreamUnavailable):
        UpstreamClient("http://127.0.0.1:9", connect_timeout=0.3).head_manifest("library/x", "latest")


def test_parse_challenge_and_ratelimit_headers():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/x:pull",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert parse_ratelimit({"ratelimit-limit": "200;w=21600", "ratelimit-remaining": "0;w=21600"}) == RateLimit(
        200, 0, 21600
    )
    assert parse_ratelimit({}) is None
