"""/readyz and /metrics of a real mirror name its upstreams and accounts' figures: by default
they answer only clients on loopback and private networks (or the allow-list's), or presenting
the metrics token; /healthz stays open; /readyz names no account."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.mirror import MirrorProcess
from tests.support.source_address import request_from

METRICS_TOKEN = "monitoring-e2e-token"
OUTSIDE, INSIDE = "203.0.113.9", "10.1.2.3"  # as the trusted proxy (127.0.0.1) forwards them


@pytest.fixture(scope="module")
def defaults(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    """No allow-list, no monitoring setting, no token: the defaults, behind a trusted proxy."""
    process = MirrorProcess(
        tmp_path_factory.mktemp("monitoring-defaults") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_AUTH="true",
        MIRROR_TRUSTED_PROXIES="127.0.0.1/32",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def with_token(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path_factory.mktemp("monitoring-token") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_AUTH="true",
        MIRROR_METRICS_TOKEN=METRICS_TOKEN,
        MIRROR_MONITORING_NETWORKS="127.0.0.1/32",
    ).start()
    yield process
    process.stop()


def get(mirror: MirrorProcess, path: str, client: str, **headers: str) -> requests.Response:
    return requests.get(f"{mirror.url}{path}", headers={"X-Forwarded-For": client, **headers}, timeout=30)


def test_by_default_only_local_and_private_clients_read_readiness_and_metrics(defaults, upstream):
    for path in ("/readyz", "/metrics"):
        refused = get(defaults, path, OUTSIDE)
        assert refused.status_code == 403, path
        assert "upstream" not in refused.text and upstream.username not in refused.text
    assert get(defaults, "/healthz", OUTSIDE).json() == {"status": "ok"}, "/healthz stays open"
    assert get(defaults, "/metrics", INSIDE).status_code == 200
    ready = get(defaults, "/readyz", INSIDE)
    assert ready.status_code == 200 and ready.json()["upstreams"]
    assert requests.get(f"{defaults.url}/readyz", timeout=30).status_code == 200, "loopback: the container's own check"


def test_readiness_names_no_account(defaults, upstream):
    ready = get(defaults, "/readyz", INSIDE)
    assert upstream.username not in ready.text
    (report,) = ready.json()["upstreams"].values()
    (account_id,) = report["accounts"]
    assert report["account_in_use"] == int(account_id)
    assert defaults.query("SELECT username FROM registry_upstreamaccount WHERE id = ?", int(account_id)) == [
        (upstream.username,)
    ]


def test_outside_the_monitoring_networks_the_token_is_needed(with_token):
    outside = lambda path, **headers: request_from("127.0.0.2", f"{with_token.url}{path}", headers=headers)  # noqa: E731
    assert outside("/readyz").status == 403
    assert outside("/metrics").status == 401
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert outside("/readyz", **bearer).status == 200
    assert outside("/metrics", **bearer).status == 200
    assert outside("/healthz").status == 200
    inside = requests.get(f"{with_token.url}/readyz", timeout=30)
    assert inside.status_code == 200, "inside the monitoring networks, readiness needs no token"
    assert requests.get(f"{with_token.url}/metrics", timeout=30).status_code == 401, "metrics always want the token"
