"""Slow and greedy clients against a real server: half-sent requests are closed after
MIRROR_CLIENT_HEADER_TIMEOUT and never hold a thread, one address holds at most
MIRROR_CONNECTIONS_PER_ADDRESS connections, and clients outside MIRROR_ALLOWED_NETWORKS are
refused by the event loop, so neither keeps anyone else from being served. Keep-alive
connections idle longer than the header timeout and slow large downloads are unaffected."""

from __future__ import annotations

from collections.abc import Iterator
import http.client
import json
import select
import socket
import ssl
import time

import pytest
import requests

from tests.e2e.test_pull import copy
from tests.support.mirror import MirrorProcess
from tests.support.source_address import request_from
from tests.support.tls import make_server_certificate

HEADER_TIMEOUT = 2
FLOOD = 120  # more than the threads of both workers (2 × 4 here)
HALF_SENT = b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\nUser-Agent: slow"


def start_mirror(upstream, tmp_path_factory, name: str, ready_from: str = "", **env: str) -> MirrorProcess:
    """`ready_from`: the address whose requests show it serving (127.0.0.1 unless it is refused)."""
    env = {"MIRROR_WEB_THREADS": "4", "MIRROR_CLIENT_HEADER_TIMEOUT": str(HEADER_TIMEOUT), **env}
    mirror = MirrorProcess(
        tmp_path_factory.mktemp(name) / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        **env,
    )
    if not ready_from:
        return mirror.start()
    mirror.launch()
    deadline = time.monotonic() + 60
    while True:
        try:
            if request_from(ready_from, f"{mirror.url}/v2/").status == 200:
                return mirror
        except OSError:
            pass
        if mirror.process.poll() is not None or time.monotonic() > deadline:
            mirror.stop()
            raise RuntimeError(f"mirror did not start:\n{mirror.log_tail()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def guarded_mirror(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    """No per-address cap: what closes a slow client here is the header timeout."""
    mirror = start_mirror(upstream, tmp_path_factory, "slow-clients", MIRROR_CONNECTIONS_PER_ADDRESS="0")
    yield mirror
    mirror.stop()


def connect(mirror: MirrorProcess, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", mirror.port), timeout=30, source_address=(source, 0))
    return sock


def half_sent_requests(mirror: MirrorProcess, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = connect(mirror, source)
        sock.sendall(HALF_SENT)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    """Readable and at its end (or reset): the server closed it. Call once it is readable."""
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, ssl.SSLEOFError):  # an SSLEOFError: closed without close_notify
        return True


def wait_until_closed(sockets: list[socket.socket], expected: int, patience: float = 60) -> list[socket.socket]:
    """The sockets the server closed, waiting until `expected` of them are (or patience ends)."""
    closed: list[socket.socket] = []
    pending = list(sockets)
    deadline = time.monotonic() + patience
    while pending and len(closed) < expected and time.monotonic() < deadline:
        readable, _, _ = select.select(pending, [], [], 0.5)
        for sock in readable:
            pending.remove(sock)
            if closed_by_server(sock):
                closed.append(sock)
    return closed


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_a_flood_of_half_sent_requests_neither_stops_other_clients_nor_stays(guarded_mirror, images, skopeo, tmp_path):
    slow = half_sent_requests(guarded_mirror, FLOOD)
    try:
        session = requests.Session()
        answers = [session.get(f"{guarded_mirror.url}/v2/", timeout=10).status_code for _ in range(5)]
        answers += [requests.get(f"{guarded_mirror.url}/v2/", timeout=10).status_code for _ in range(5)]
        assert answers == [200] * 10
        copy(skopeo, guarded_mirror, "library/small:1", tmp_path / "small")
        assert (tmp_path / "small" / "manifest.json").read_bytes() == images.small.manifest
        # ...and every half-sent request is closed by the server after the header timeout.
        closed = wait_until_closed(slow, FLOOD)
        assert len(closed) == FLOOD
    finally:
        close_all(slow)


def test_a_request_trickled_byte_by_byte_is_closed_all_the_same(guarded_mirror):
    """The timeout is for the whole of the headers, not between two bytes of them."""
    sock = connect(guarded_mirror)
    try:
        closed = False
        for byte in HALF_SENT * 10:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                closed = closed_by_server(sock)
                break
        assert closed, "the server closed the connection before the trickle ended"
    finally:
        sock.close()


def test_an_idle_keep_alive_connection_outlives_the_header_timeout_and_a_half_sent_next_request_does_not(
    guarded_mirror,
):
    connection = http.client.HTTPConnection("127.0.0.1", guarded_mirror.port, timeout=30)
    try:
        connection.request("GET", "/v2/")
        first = connection.getresponse()
        assert (first.status, first.read()) == (200, b"{}")
        local = connection.sock.getsockname()
        time.sleep(HEADER_TIMEOUT + 1)  # idle between requests: keep-alive's business (75 s), not the header timeout's
        connection.request("GET", "/v2/")  # http.client would raise had the server closed it
        second = connection.getresponse()
        assert (second.status, second.read()) == (200, b"{}")
        assert connection.sock.getsockname() == local, "the same connection answered again"
        connection.sock.sendall(HALF_SENT)
        assert wait_until_closed([connection.sock], 1) == [connection.sock], "the half-sent next request was closed"
    finally:
        connection.close()


def test_a_large_blob_read_slowly_is_not_cut_by_the_header_timeout(guarded_mirror, images):
    layer = images.big.layers[4]  # 12 MB
    url = f"{guarded_mirror.url}/v2/library/big/blobs/{layer.digest}"
    requests.get(url, timeout=60).raise_for_status()  # cached: the slow read below is a sendfile hit
    received = bytearray()
    with requests.get(url, timeout=60, stream=True) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1024 * 1024):
            received += chunk
            time.sleep(0.4)  # about twice the header timeout in all
    assert bytes(received) == layer.data


def test_connections_beyond_the_per_address_cap_are_closed_and_others_are_served(upstream, tmp_path_factory):
    cap = 5
    # One worker process, so one count of the address's connections (each process keeps its own).
    mirror = start_mirror(
        upstream,
        tmp_path_factory,
        "capped",
        MIRROR_WEB_WORKERS="1",
        MIRROR_CONNECTIONS_PER_ADDRESS=str(cap),
        MIRROR_CLIENT_HEADER_TIMEOUT="60",  # what closes connections here is the cap alone
    )
    greedy: list[socket.socket] = []
    try:
        greedy = [connect(mirror, "127.0.0.2") for _ in range(cap + 7)]
        closed = wait_until_closed(greedy, 7)
        assert len(closed) == 7
        kept = [sock for sock in greedy if sock not in closed]
        assert select.select(kept, [], [], 0.5)[0] == [], "the first ones stay open"
        assert request_from("127.0.0.3", f"{mirror.url}/v2/").status == 200, "another address is served"
        for sock in kept:  # ...and the greedy address's own connections are served
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n")
            assert read_to_the_end(sock).startswith(b"HTTP/1.1 200")
        assert request_from("127.0.0.2", f"{mirror.url}/v2/").status == 200, "closed ones no longer count"
    finally:
        close_all(greedy)
        mirror.stop()


def test_clients_outside_the_allowed_networks_are_refused_without_a_thread(upstream, tmp_path_factory):
    mirror = start_mirror(
        upstream,
        tmp_path_factory,
        "outsiders",
        ready_from="127.0.0.2",
        MIRROR_ALLOWED_NETWORKS="127.0.0.2/32",
        MIRROR_CONNECTIONS_PER_ADDRESS="0",
        MIRROR_CLIENT_HEADER_TIMEOUT="60",  # neither cap nor timeout helps here
    )
    flood: list[socket.socket] = []
    try:
        flood = half_sent_requests(mirror, FLOOD)  # from 127.0.0.1, outside the list
        answers = [request_from("127.0.0.2", f"{mirror.url}/v2/").status for _ in range(10)]
        assert answers == [200] * 10
        refused = request_from("127.0.0.1", f"{mirror.url}/v2/library/small/manifests/1")
        assert refused.status == 403
        assert json.loads(refused.body)["errors"][0]["code"] == "DENIED"
        assert refused.headers["docker-distribution-api-version"] == "registry/2.0"
        assert request_from("127.0.0.1", f"{mirror.url}/metrics").status == 403
        assert request_from("127.0.0.1", f"{mirror.url}/healthz").status == 200, "health checks stay open"
    finally:
        close_all(flood)
        mirror.stop()


def test_an_https_mirror_closes_silent_and_half_sent_clients_and_serves_others(upstream, tmp_path_factory):
    """Serving TLS itself, the handshake is made in the event loop too."""
    certificate = make_server_certificate(tmp_path_factory.mktemp("slow-tls"))
    mirror = MirrorProcess(
        tmp_path_factory.mktemp("slow-https") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_WEB_THREADS="4",
        MIRROR_CLIENT_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        MIRROR_CONNECTIONS_PER_ADDRESS="0",
        REGISTRY_HTTP_TLS_CERTIFICATE=str(certificate.cert),
        REGISTRY_HTTP_TLS_KEY=str(certificate.key),
    )
    mirror.verify = str(certificate.ca_cert)
    mirror.start()
    context = ssl.create_default_context(cafile=str(certificate.ca_cert))
    stalled: list[socket.socket] = []
    try:
        stalled = [connect(mirror) for _ in range(20)]  # no handshake at all
        for _ in range(10):  # a handshake, then half a request
            tls = context.wrap_socket(connect(mirror), server_hostname="127.0.0.1")
            tls.sendall(HALF_SENT)
            stalled.append(tls)
        answers = [requests.get(f"{mirror.url}/v2/", timeout=10, verify=mirror.verify).status_code for _ in range(5)]
        assert answers == [200] * 5
        assert len(wait_until_closed(stalled, len(stalled))) == len(stalled)
    finally:
        close_all(stalled)
        mirror.stop()
