"""`make run`, as a user starts it: a working mirror in the foreground that stops cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests

from tests.support.mirror import PROJECT_ROOT
from tests.support.upstream_registry import free_port


def wait_until_serving(url: str, process: subprocess.Popen, log) -> requests.Response:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make run exited early:\n{log.read_text()}"
        try:
            return requests.get(f"{url}/v2/", timeout=1)
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError(f"make run did not start serving:\n{log.read_text()}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("how", ["SIGTERM to make", "SIGINT to the terminal's process group"])
def test_make_run_serves_a_mirror_and_stops_everything(how, upstream, images, skopeo, tmp_path):
    data_dir = tmp_path / "fresh-data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "DATABASE_URL"}
    env.update(
        MIRROR_DATA_DIR=str(data_dir),
        REGISTRY_HTTP_ADDR=f"127.0.0.1:{port}",
        REGISTRY_PROXY_REMOTEURL=upstream.url,
        REGISTRY_PROXY_USERNAME=upstream.username,
        REGISTRY_PROXY_PASSWORD=upstream.password,
        MIRROR_UPSTREAM_LIBRARY_PREFIX="true",
    )
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["make", "run"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        response = wait_until_serving(f"http://127.0.0.1:{port}", process, log)
        assert response.status_code == 200
        assert response.headers["Server"].startswith("gunicorn"), "a production server, not runserver"
        skopeo.run(
            "copy", "--src-tls-verify=false", "--src-no-creds",
            f"docker://127.0.0.1:{port}/library/small:1", f"dir:{tmp_path / 'pulled'}",
        )
        # Everything the embedded default keeps lives under MIRROR_DATA_DIR.
        assert (data_dir / "db.sqlite3").is_file()
        assert len([p for p in (data_dir / "blobs").rglob("*") if p.is_file()]) == len(images.small.blobs)

        if how == "SIGTERM to make":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_alive(process.pid), "every process make run started has stopped"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
