import ipaddress

from django.test import RequestFactory
import pytest

from access.clientaddress import client_address, parse_address


def request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/v2/", **extra)


@pytest.fixture
def trusted(settings):
    settings.MIRROR_TRUSTED_PROXIES = ["127.0.0.1/32", "10.0.0.0/8"]


def test_untrusted_peer_is_the_client_whatever_it_forwards(settings):
    settings.MIRROR_TRUSTED_PROXIES = []
    assert client_address(request("192.0.2.7", "198.51.100.1")) == ipaddress.ip_address("192.0.2.7")


def test_trusted_proxy_forwards_the_client(trusted):
    assert client_address(request("127.0.0.1", "198.51.100.1")) == ipaddress.ip_address("198.51.100.1")


def test_chain_of_trusted_proxies_is_skipped_right_to_left(trusted):
    # The left-most entry is whatever the client wrote: only the first untrusted hop counts.
    got = client_address(request("127.0.0.1", "203.0.113.9, 198.51.100.1, 10.1.2.3"))
    assert got == ipaddress.ip_address("198.51.100.1")


def test_malformed_forwarded_entry_gives_no_address(trusted):
    assert client_address(request("127.0.0.1", "not-an-address, 10.1.2.3")) is None


def test_trusted_proxy_without_header_is_the_client(trusted):
    assert client_address(request("127.0.0.1")) == ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("192.0.2.1:5000", "192.0.2.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:192.0.2.5", "192.0.2.5"),
        ("2001:db8::2", "2001:db8::2"),
        ("", None),
        ("example.com", None),
    ],
)
def test_parse_address(text, expected):
    got = parse_address(text)
    assert (str(got) if got else None) == expected
