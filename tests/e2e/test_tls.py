"""The mirror serving HTTPS itself (REGISTRY_HTTP_TLS_CERTIFICATE / REGISTRY_HTTP_TLS_KEY)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.mirror import MirrorProcess
from tests.support.tls import ServerCertificate, make_server_certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> ServerCertificate:
    return make_server_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_mirror(certificate, upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    mirror = MirrorProcess(
        tmp_path_factory.mktemp("tls-mirror") / "data", upstream.url,
        username=upstream.username, password=upstream.password,
        REGISTRY_HTTP_TLS_CERTIFICATE=str(certificate.cert), REGISTRY_HTTP_TLS_KEY=str(certificate.key),
    )
    mirror.verify = str(certificate.ca_cert)
    yield mirror.start()
    mirror.stop()


def test_skopeo_pulls_over_https_with_verification(https_mirror, certificate, images, skopeo, tmp_path):
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(certificate.ca_cert.read_bytes())
    for attempt in ("cold", "warm"):
        skopeo.run(
            "copy", "--src-cert-dir", str(cert_dir), "--src-no-creds",
            f"docker://{https_mirror.host}/library/big:1", f"dir:{tmp_path / attempt}",
        )
        got = {p.name: p.read_bytes() for p in (tmp_path / attempt).iterdir() if len(p.name) == 64}
        assert got == {b.digest.split(":")[1]: b.data for b in images.big.blobs}, attempt


def test_a_wrong_ca_is_refused(https_mirror, skopeo, tmp_path):
    other = make_server_certificate(tmp_path / "other", ca_name="Some other CA")
    cert_dir = tmp_path / "wrong"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(other.ca_cert.read_bytes())
    failed = skopeo.run(
        "inspect", "--cert-dir", str(cert_dir), "--no-creds", "--raw",
        f"docker://{https_mirror.host}/library/small:1", check=False,
    )
    assert failed.returncode != 0
    assert b"certificate" in failed.stderr
