"""An outage does not outlive itself: a real mirror (client authentication on, pulling with
the upstream's account) asked anonymously for a repository it has never judged, while its
upstream is unreachable, then answers 500, then 429, then recovers. Each failure reaches the
client as what it is (503, 503, 429 with Retry-After), each request asks the upstream again,
and the very first request after the recovery is served."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.fault_proxy import DROP, ERROR, FORWARD, RATE_LIMITED, FaultProxy
from tests.support.images import MANIFEST_ACCEPT
from tests.support.mirror import MirrorProcess


@pytest.fixture
def switch(upstream) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream.url, retry_after=17).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def mirror(switch, upstream, images, tmp_path) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path / "data",
        switch.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_AUTH="true",
    ).start()
    yield process
    process.stop()


def pull(mirror: MirrorProcess, repository: str) -> requests.Response:
    return requests.get(f"{mirror.url}/v2/{repository}/manifests/1", headers={"Accept": MANIFEST_ACCEPT}, timeout=60)


@pytest.mark.parametrize("repository", ["library/small", "private/secret"])
def test_each_failure_is_passed_on_and_the_first_request_after_recovery_goes_through(
    mirror, switch, images, repository
):
    switch.wait_quiet()
    for mode, status, code in (
        (DROP, 503, "UNAVAILABLE"),
        (ERROR, 503, "UNAVAILABLE"),
        (RATE_LIMITED, 429, "TOOMANYREQUESTS"),
    ):
        switch.mode = mode
        for _ in range(2):  # the second request is not answered from memory either
            before = switch.count
            answer = pull(mirror, repository)
            assert answer.status_code == status, (mode, answer.text)
            assert answer.json()["errors"][0]["code"] == code
            assert switch.count > before, f"{mode}: the mirror asked the upstream again"
        if mode == RATE_LIMITED:
            assert answer.headers["Retry-After"] == "17", "the upstream's Retry-After"
    switch.mode = FORWARD
    recovered = pull(mirror, repository)
    if repository == "library/small":
        assert recovered.status_code == 200 and recovered.content == images.small.manifest
    else:  # the upstream's answer now: private, so an anonymous client is asked to log in
        assert recovered.status_code == 401 and recovered.json()["errors"][0]["code"] == "UNAUTHORIZED"
