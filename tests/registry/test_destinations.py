"""Where an upstream may send the mirror (registry/destinations.py): the address classes, the
redirect rules, the token realm rules, and the check made when connecting.

Only loopback is reachable here, so the rules for private and link-local addresses are
tested on address literals (which resolve to themselves, without DNS)."""

from __future__ import annotations

import pytest
import requests

from registry.destinations import DestinationRefused, Destinations, address_class
from registry.models import default_realm_hosts
from registry.upstreams.client import make_session
from tests.support.fake_registry import Listener


@pytest.mark.parametrize(
    "address, kind",
    [
        ("8.8.8.8", "public"),
        ("2606:4700::1111", "public"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_address_classes(address, kind):
    assert address_class(address) == kind


PUBLIC_UPSTREAM = Destinations.of("https://8.8.8.8")


@pytest.mark.parametrize(
    "location",
    [
        "https://10.0.0.5/blob",
        "https://192.168.0.9/blob",
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:2375/containers/json",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://0.0.0.0/x",
        "https://[fe80::1]/x",
        "https://100.64.1.1/x",
    ],
)
def test_a_public_upstream_never_sends_the_mirror_to_an_internal_address(location):
    with pytest.raises(DestinationRefused):
        PUBLIC_UPSTREAM.redirect_target("https://8.8.8.8/v2/x/blobs/sha256:1", location)


def test_a_public_upstream_may_send_blobs_to_a_public_cdn():
    target = PUBLIC_UPSTREAM.redirect_target("https://8.8.8.8/v2/x/blobs/sha256:1", "https://1.1.1.1/cdn/blob?sig=a")
    assert target == "https://1.1.1.1/cdn/blob?sig=a"


def test_an_upstream_reaches_addresses_of_its_own_kind_only():
    private = Destinations.of("http://10.1.2.3:5000")
    assert private.redirect_target("http://10.1.2.3:5000/v2/x/blobs/d", "http://10.9.9.9:9000/bucket/d")
    for inward in ("http://127.0.0.1/x", "http://169.254.169.254/x"):
        with pytest.raises(DestinationRefused):
            private.redirect_target("http://10.1.2.3:5000/v2/x/blobs/d", inward)
    loopback = Destinations.of("http://127.0.0.1:5000")
    assert loopback.redirect_target("http://127.0.0.1:5000/v2/x/blobs/d", "http://127.0.0.1:6000/cdn")
    assert loopback.redirect_target("http://127.0.0.1:5000/v2/x/blobs/d", "http://localhost:6000/cdn")
    with pytest.raises(DestinationRefused):
        loopback.redirect_target("http://127.0.0.1:5000/v2/x/blobs/d", "http://10.0.0.1/cdn")


def test_never_from_https_to_http_and_only_to_http_urls():
    current = "https://8.8.8.8/v2/x/blobs/d"
    for location in (
        "http://1.1.1.1/cdn",
        "file:///etc/passwd",
        "gopher://1.1.1.1/",
        "https://1.1.1.1/a\r\nX-Injected: 1",
        "https://user:pw@1.1.1.1/",
        "https://" + "a" * 3000 + ".example/",
        "",
        None,
        "https://1.1.1.1:99999/",
    ):
        with pytest.raises(DestinationRefused):
            PUBLIC_UPSTREAM.redirect_target(current, location)
    assert PUBLIC_UPSTREAM.redirect_target(current, "/v2/x/blobs/other") == "https://8.8.8.8/v2/x/blobs/other"
    # From plain HTTP, HTTPS is fine.
    assert Destinations.of("http://8.8.8.8").redirect_target("http://8.8.8.8/v2/x/blobs/d", "https://1.1.1.1/cdn")


def test_token_realms_on_the_upstreams_host_or_its_realm_hosts_over_https():
    hub = Destinations.of("https://registry-1.docker.io", default_realm_hosts("https://registry-1.docker.io"))
    assert hub.realm_refusal("https://auth.docker.io/token") is None
    assert hub.realm_refusal("https://registry-1.docker.io/token") is None
    assert "plain HTTP" in hub.realm_refusal("http://auth.docker.io/token")
    assert "plain HTTP" in hub.realm_refusal("http://registry-1.docker.io/token"), "the upstream is HTTPS"
    assert "evil.example" in hub.realm_refusal("https://evil.example/token")
    assert hub.realm_refusal("https://auth.docker.io.evil.example/token") is not None
    assert hub.realm_refusal("https://user@auth.docker.io/token") is not None
    assert hub.realm_refusal("ftp://auth.docker.io/token") is not None

    plain = Destinations.of("http://127.0.0.1:5000")
    assert plain.realm_refusal("http://127.0.0.1:5001/token") is None, "same host, another port"
    assert plain.realm_refusal("https://127.0.0.1:5001/token") is None
    assert "localhost" in plain.realm_refusal("http://localhost:5001/token"), "another host name"
    listed = Destinations.of("http://127.0.0.1:5000", ["localhost"])
    assert "plain HTTP" in listed.realm_refusal("http://localhost:5001/token"), "listed hosts: HTTPS only"
    assert listed.realm_refusal("https://localhost:5001/token") is None


def test_docker_hub_has_auth_docker_io_as_realm_host_by_default():
    assert default_realm_hosts("https://registry-1.docker.io") == ["auth.docker.io"]
    assert default_realm_hosts("https://index.docker.io") == ["auth.docker.io"]
    assert default_realm_hosts("https://ghcr.io") == []


def test_the_address_connected_to_is_checked_when_connecting():
    """The check made at connect time, whatever was checked before (DNS rebinding): a session
    of a public upstream does not connect to a name that resolves to loopback."""
    with Listener() as listener:
        session = make_session(destinations=Destinations.of("https://8.8.8.8"))
        with pytest.raises(DestinationRefused):
            session.get(f"http://localhost:{listener.port}/internal", timeout=5)
        assert listener.requests == []
        # The upstream's own host is connected to as configured, and a loopback upstream's
        # session reaches loopback.
        own = make_session(destinations=Destinations.of(f"http://localhost:{listener.port}"))
        assert own.get(f"http://localhost:{listener.port}/own", timeout=5).status_code == 200
        home = make_session(destinations=Destinations.of("http://127.0.0.1:1"))
        assert home.get(f"http://localhost:{listener.port}/cdn", timeout=5).status_code == 200
        assert [seen.path for seen in listener.requests] == ["/own", "/cdn"]
        with pytest.raises(requests.ConnectionError):  # refused connections still fail as before
            make_session(destinations=Destinations.of("http://127.0.0.1:1")).get("http://localhost:1/", timeout=5)
