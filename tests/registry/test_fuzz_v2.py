"""Property-based tests of /v2/ over names, references, digests, query strings and headers,
through Django's test client against the real views, with a store in a temporary
MIRROR_DATA_DIR and the fake upstream as the only upstream.

Whatever the input: no 500; an error is the registry's JSON with the status its code
carries; no file outside the data directory is created or changed; and input the mirror
rejects (400, 405) writes nothing at all, neither files nor database rows.
"""

from __future__ import annotations

from dataclasses import dataclass
import ipaddress
import json
from pathlib import Path
import re
from urllib.parse import quote, urlencode

from django.test import Client
from hypothesis import given
from hypothesis import strategies as st
import pytest

from audit import recorder
from dashboard import stats
from registry import oci
from tests.registry.fuzzing import BOUNDED, REJECTED_STATUSES, Files, check_answer, row_counts
from tests.support.fake_registry import FakeRegistry
from tests.support.images import MANIFEST_ACCEPT

# Blob fills write from a thread of their own: real transactions.
pytestmark = pytest.mark.django_db(transaction=True)

PIECES = [
    "/",
    "..",
    ".",
    "%",
    "%2e",
    "%2f",
    "\n",
    "\r",
    "\x00",
    " ",
    ":",
    "@",
    "sha256:",
    "?",
    "#",
    "\\",
    "~",
    "é",
    "—",
]
junk = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    st.lists(st.sampled_from(PIECES) | st.text("abcAB09_-.", max_size=4), max_size=8).map("".join),
)


def almost(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid input with one odd piece put before or after it."""
    return st.tuples(valid, st.sampled_from(PIECES), st.booleans()).map(lambda t: t[0] + t[1] if t[2] else t[1] + t[0])


valid_names = st.from_regex(oci.NAME_RE).filter(lambda n: len(n) < 300)
names = st.one_of(valid_names, st.just("library/bad"), almost(valid_names), junk)
hex_lower = "0123456789abcdef"
digests = st.one_of(
    st.text(hex_lower, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.builds(
        "{}:{}".format,
        st.sampled_from(["sha256", "sha512", "md5", "SHA256", "sha256+b64", "", "sha256:sha256"]),
        st.text(hex_lower + "ABCDEF./%=_-\n", max_size=130),
    ),
)
valid_tags = st.from_regex(oci.TAG_RE)
references = st.one_of(valid_tags, digests, almost(valid_tags), almost(digests), junk)


# The OCI grammar, written out again as the tests' own oracle.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"


def well_formed_name(name: str) -> bool:
    return len(name) <= 255 and re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", name) is not None


def names_a_registry_host(name: str) -> bool:
    """`/v2/<registry host>/<repository>/...` is routed by that host (404 when none answers for it)."""
    first, slash, _ = name.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def well_formed_reference(reference: str) -> bool:
    return (
        re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}", reference)
        is not None
    )


@dataclass
class Mirror:
    client: Client
    data: Path  # the store: MIRROR_DATA_DIR
    around: tuple[Path, ...]  # what must never change: the test's directory and the process's own data dir
    config: bytes  # a cached blob
    config_digest: str
    upstream: FakeRegistry  # the fake upstream: the requests it got

    def outside(self) -> Files:
        # The test database (and its journal files) is the test process's, written by the test itself.
        return Files.under(*self.around, skip=(self.data,), skip_names="test-db-")

    def exchange(self, method: str, path: str, **headers: str):
        """Send one request; check the answer and what it may have written. Returns (response, body)."""
        outside, inside, rows = self.outside(), Files.under(self.data), row_counts()
        response = self.client.generic(method, path, **headers)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        response.close()
        check_answer(response)
        assert self.outside() == outside, "a file outside the data directory was written"
        if response.status_code in REJECTED_STATUSES:
            assert Files.under(self.data) == inside, "a rejected request wrote to the store"
            assert row_counts() == rows, "a rejected request wrote to the database"
        return response, body


@pytest.fixture
def mirror(settings, tmp_path, fake_upstream, broken_image) -> Mirror:
    home_data = Path(settings.MIRROR_DATA_DIR)  # the test process's own (its test database lives there)
    data = tmp_path / "data"
    (tmp_path / "neighbour").mkdir()
    (tmp_path / "neighbour" / "passwd").write_text("root:x:0:0\n")
    settings.MIRROR_DATA_DIR = data
    settings.REGISTRY_PROXY_REMOTEURL = fake_upstream.url
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "true"
    settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT = 0.5
    settings.MIRROR_X_ACCEL_REDIRECT = ""
    client = Client()
    # Cached before the fuzzing: library/bad's manifest and its (intact) config blob.
    assert client.get("/v2/library/bad/manifests/latest", HTTP_ACCEPT=MANIFEST_ACCEPT).status_code == 200
    config = broken_image.config
    warmed = client.get(f"/v2/library/bad/blobs/{config.digest}")
    assert b"".join(warmed.streaming_content) == config.data
    warmed.close()
    yield Mirror(
        client,
        data,
        around=(tmp_path, home_data),
        config=config.data,
        config_digest=config.digest,
        upstream=fake_upstream,
    )
    stats.take()
    recorder.take()


@BOUNDED
@given(
    method=st.sampled_from(["GET", "GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"]),
    endpoint=st.sampled_from(["manifests", "blobs", "tags/list", "referrers", "blobs/uploads", "nothing"]),
    name=names,
    reference=references,
)
def test_any_name_and_reference_gets_a_registry_answer(mirror, method, endpoint, name, reference):
    path = f"/v2/{quote(name, safe='/')}/{endpoint}"
    if endpoint in ("manifests", "blobs", "referrers"):
        path += "/" + quote(reference, safe="")
    asked_upstream = len(mirror.upstream.requests)
    response, _ = mirror.exchange(method, path, HTTP_ACCEPT=MANIFEST_ACCEPT)
    if method not in ("GET", "HEAD"):
        assert response.status_code == 405
    elif (
        endpoint == "manifests"
        and well_formed_name(name)
        and not names_a_registry_host(name)
        # (An empty reference, or one with a slash, makes another path: no such endpoint, 404.)
        and reference
        and "/" not in reference
        and not well_formed_reference(reference)
    ):
        # Checked against the grammar before anything touches storage or the network.
        assert response.status_code == 400
        assert len(mirror.upstream.requests) == asked_upstream, "an ill-formed reference went upstream"
    if response.status_code == 200 and endpoint in ("manifests", "blobs"):
        oci.validate_name(name if name.count("/") else f"library/{name}")  # only well-formed names are served


@BOUNDED
@given(
    where=st.sampled_from(["/v2/library/bad/tags/list", "/v2/_catalog", "/v2/bad/tags/list"]),
    n=st.none() | st.integers(min_value=-5, max_value=10**20).map(str) | junk,
    last=st.none() | junk | st.from_regex(oci.TAG_RE),
    ns=st.none() | st.sampled_from(["docker.io", "127.0.0.1", "ghcr.io", "DOCKER.IO"]) | junk,
)
def test_any_query_string_gets_a_registry_answer(mirror, where, n, last, ns):
    query = urlencode({key: value for key, value in (("n", n), ("last", last), ("ns", ns)) if value is not None})
    response, body = mirror.exchange("GET", f"{where}?{query}")
    if n not in (None, "") and not re.fullmatch(r"[0-9]{1,18}", n) and ns is None:
        assert response.status_code == 400  # PAGINATION_NUMBER_INVALID
    if response.status_code == 200 and n not in (None, "") and int(n) > 0:
        listed = json.loads(body)
        assert len(listed.get("tags") or listed.get("repositories") or []) <= int(n)


def expected_window(start: int | None, end: int | None, size: int) -> tuple[int, int] | None:
    """The bytes a single `bytes=start-end` range asks for (inclusive), or None: unsatisfiable."""
    if start is None and end is None:
        return None
    if start is None:
        return (max(size - end, 0), size - 1) if end > 0 and size > 0 else None
    if start >= size or (end is not None and end < start):
        return None
    return start, min(end if end is not None else size - 1, size - 1)


bounds = st.none() | st.integers(min_value=0, max_value=2**70)


@BOUNDED
@given(start=bounds, end=bounds, spaces=st.sampled_from(["", " "]))
def test_ranges_on_a_cached_blob_follow_the_byte_range_rules(mirror, start, end, spaces):
    header = f"{spaces}bytes={'' if start is None else start}-{'' if end is None else end}{spaces}"
    response, body = mirror.exchange("GET", f"/v2/library/bad/blobs/{mirror.config_digest}", HTTP_RANGE=header)
    size = len(mirror.config)
    window = expected_window(start, end, size)
    if window is None:
        assert response.status_code == 416
    else:
        assert response.status_code == 206
        assert body == mirror.config[window[0] : window[1] + 1]
        assert response["Content-Range"] == f"bytes {window[0]}-{window[1]}/{size}"


@BOUNDED
@given(
    range_header=st.none()
    | junk
    | st.from_regex(r"bytes=[0-9]{0,4}-[0-9]{0,4}(,[0-9]{0,3}-[0-9]{0,3})?", fullmatch=True),
    accept=st.none() | junk | st.sampled_from([MANIFEST_ACCEPT, "*/*", "application/vnd.oci.image.index.v1+json"]),
    forwarded=st.none() | junk | st.lists(st.ip_addresses().map(str) | junk, max_size=4).map(", ".join),
    target=st.sampled_from(["config", "missing", "manifest"]),
    accel=st.booleans(),
)
def test_any_headers_get_a_registry_answer(mirror, settings, range_header, accept, forwarded, target, accel):
    settings.MIRROR_TRUSTED_PROXIES = ["127.0.0.1/32"]
    settings.MIRROR_X_ACCEL_REDIRECT = "/_mirror_blobs/" if accel else ""
    path = {
        "config": f"/v2/library/bad/blobs/{mirror.config_digest}",
        "missing": "/v2/library/bad/blobs/sha256:" + "0" * 64,
        "manifest": "/v2/library/bad/manifests/latest",
    }[target]
    headers = {
        f"HTTP_{name}": value
        for name, value in (("RANGE", range_header), ("ACCEPT", accept), ("X_FORWARDED_FOR", forwarded))
        if value is not None
    }
    recorder.take()
    response, _ = mirror.exchange("GET", path, **headers)
    if response.has_header("X-Accel-Redirect"):
        # nginx is only ever sent to a content address under its blob location.
        assert re.fullmatch(r"/_mirror_blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}", response["X-Accel-Redirect"])
    for record in recorder.take()[0]:
        if record.client_address is not None:
            ipaddress.ip_address(record.client_address)  # an address, never the header's text
