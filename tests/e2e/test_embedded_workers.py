"""The embedded default: `make run` with no Redis runs a worker and a scheduler too, so a
prefetch is accepted and completed, and stopping it stops them all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from tests.support.mirror import PROJECT_ROOT
from tests.support.upstream_registry import free_port

BROKER_VARIABLES = ("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL", "MIRROR_EMBEDDED_WORKERS")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_make_run_accepts_a_prefetch_and_completes_it(upstream, images, tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k not in BROKER_VARIABLES}
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
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"make run exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"make run did not start serving:\n{log.read_text()}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)

        mark = upstream.log_mark()
        prefetch = subprocess.run(
            [sys.executable, "manage.py", "prefetch", "library/big:1"],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180,
        )
        assert prefetch.returncode == 0, f"{prefetch.stdout}\n{prefetch.stderr}\n{log.read_text()[-3000:]}"
        assert "queued prefetch job 1" in prefetch.stdout
        assert "job 1 succeeded" in prefetch.stdout and "6/6 blobs" in prefetch.stdout
        assert "Task registry.prefetch[" in log.read_text(), "done by the embedded worker"
        stored = {p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()}
        assert stored == {blob.digest.split(":")[1] for blob in images.big.blobs}
        assert all(upstream.blob_gets(blob.digest, since=mark) == 1 for blob in images.big.blobs)
        assert (data_dir / "broker" / "queue").is_dir() and not any((data_dir / "broker" / "queue").iterdir())

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_alive(process.pid), "web server, worker and scheduler have all stopped"
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
