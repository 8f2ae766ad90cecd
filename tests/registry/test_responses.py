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
