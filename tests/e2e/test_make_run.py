"""`make run`, as a user starts it: a working mirror in the foreground that stops cleanly."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.support.make_run import MakeRun


@pytest.mark.parametrize("how", ["SIGTERM to make", "SIGINT to the terminal's process group"])
def test_make_run_serves_a_mirror_and_stops_everything(how, upstream, images, skopeo, tmp_path):
    with MakeRun(tmp_path, upstream) as run:
        response = run.wait_until_serving()
        assert response.status_code == 200
        assert response.headers["Server"].startswith("gunicorn"), "a production server, not runserver"
        skopeo.run(
            "copy",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://127.0.0.1:{run.port}/library/small:1",
            f"dir:{tmp_path / 'pulled'}",
        )
        # Everything the embedded default keeps lives under MIRROR_DATA_DIR; the PostgreSQL pass's
        # database is on the server instead.
        assert (run.data_dir / "db.sqlite3").is_file() != run.database.postgres
        assert run.database.query("SELECT COUNT(*) FROM registry_blob") == [(len(images.small.blobs),)]
        assert len([p for p in (run.data_dir / "blobs").rglob("*") if p.is_file()]) == len(images.small.blobs)

        if how == "SIGTERM to make":
            run.process.send_signal(signal.SIGTERM)
        else:
            os.killpg(run.process.pid, signal.SIGINT)
        assert run.wait_until_all_stopped(), "every process make run started has stopped"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{run.url}/v2/", timeout=2)
