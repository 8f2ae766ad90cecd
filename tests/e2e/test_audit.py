"""The audit log of a real mirror: skopeo pulls through it, and the records land in its
database, buffered while it runs and written by the flush thread, or as it stops."""

from __future__ import annotations

from tests.support.dashboard import wait_for
from tests.support.mirror import MirrorProcess

COLUMNS = "method, repository, reference, digest, outcome, status, client_address, username, user_agent"


def audit_rows(mirror: MirrorProcess) -> list[tuple]:
    return mirror.query(f"SELECT {COLUMNS} FROM audit_pullrecord ORDER BY at, id")


def pull(skopeo, mirror: MirrorProcess, reference: str, dest, check: bool = True):
    return skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        f"docker://{mirror.host}/{reference}",
        f"dir:{dest}",
        check=check,
    )


def test_pulls_are_in_the_audit_log(skopeo, upstream, images, tmp_path, processes):
    data_dir = tmp_path / "data"

    def start(flush_interval: str) -> MirrorProcess:
        process = MirrorProcess(
            data_dir,
            upstream.url,
            username=upstream.username,
            password=upstream.password,
            MIRROR_AUDIT_FLUSH_INTERVAL=flush_interval,
            MIRROR_EMBEDDED_WORKERS="false",
            MIRROR_TAG_TTL="3600",
        ).start()
        processes.append(process)
        return process

    # Written only as the server stops (interval 0): nothing before, everything after.
    mirror = start("0")
    pull(skopeo, mirror, "library/small:1", tmp_path / "cold")
    pull(skopeo, mirror, "library/small:1", tmp_path / "warm")
    assert pull(skopeo, mirror, "library/small:no-such-tag", tmp_path / "none", check=False).returncode != 0
    assert audit_rows(mirror) == [], "no database write on the pull path"
    mirror.stop()

    rows = audit_rows(mirror)
    gets = [row for row in rows if row[0] == "GET"]
    small = images.small.digest
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in gets] == [
        ("library/small", "1", small, "miss", 200),
        ("library/small", "1", small, "hit", 200),
        ("library/small", "no-such-tag", "", "not_found", 404),
    ]
    assert {(str(r[6]), r[7]) for r in rows} == {("127.0.0.1", "")}, "the client's address; no client account"
    assert all("skopeo" in r[8] for r in rows), "the client's User-Agent"

    # Written by the flush thread while the server runs.
    mirror = start("1")
    pull(skopeo, mirror, "library/small:1", tmp_path / "again")
    after = wait_for(lambda: audit_rows(mirror), lambda found: len(found) > len(rows))
    assert [(r[0], r[1], r[2], r[4]) for r in after[len(rows) :]] == [("GET", "library/small", "1", "hit")]
