import pytest

from registry import oci
from registry.api.responses import ByteRange, FileSlice, parse_range


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, None),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=10-19", ByteRange(10, 19)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=90-1000", ByteRange(90, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
    ],
)
def test_satisfiable_ranges(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=20-10", "bytes=-0", "bytes=-", "items=0-1", "bytes=0-1,5-6", "bytes=a-b", "0-1"]
)
def test_unsatisfiable_or_malformed_ranges_are_416(header):
    with pytest.raises(oci.RangeNotSatisfiable) as raised:
        parse_range(header, 100)
    assert raised.value.status == 416


def test_file_slice_reads_only_its_window(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(100)))
    window = FileSlice(path, 10, 5)
    assert window.read(3) == bytes([10, 11, 12])
    assert window.read() == bytes([13, 14])
    assert window.read() == b""
    window.close()


SECURITY = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v2/"),
        ("HEAD", "/v2/"),
        ("GET", "/v2"),
        ("GET", "/v2/x/unknown"),
        ("PUT", "/v2/x/manifests/1"),
        ("GET", "/v2/INVALID/manifests/1"),
        ("GET", "/v2/x/blobs/sha256:nothex"),
        ("GET", "/v2/token"),
    ],
)
def test_every_v2_answer_is_never_sniffed_nor_run(client, method, path):
    response = client.generic(method, path)
    assert {name: response.get(name) for name in SECURITY} == SECURITY, (response.status_code, path)


@pytest.mark.django_db
def test_the_sandbox_is_for_v2_only(client):
    assert "Content-Security-Policy" not in client.get("/admin/login/")


def test_the_last_resort_error_is_sandboxed_too(rf):
    from registry.api.responses import server_error

    response = server_error(rf.get("/v2/x/manifests/1"))
    assert response.status_code == 500 and response["Content-Security-Policy"] == SECURITY["Content-Security-Policy"]
