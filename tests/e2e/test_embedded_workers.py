"""The embedded default: `make run` with no Redis runs a worker and a scheduler too, so a
prefetch is accepted and completed, and stopping it stops them all."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support.make_run import MakeRun
from tests.support.mirror import PROJECT_ROOT


def test_make_run_accepts_a_prefetch_and_completes_it(upstream, images, tmp_path):
    with MakeRun(tmp_path, upstream) as run:
        assert run.wait_until_serving().status_code == 200

        mark = upstream.log_mark()
        prefetch = subprocess.run(
            [sys.executable, "manage.py", "prefetch", "library/big:1"],
            cwd=PROJECT_ROOT,
            env=run.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert prefetch.returncode == 0, f"{prefetch.stdout}\n{prefetch.stderr}\n{run.log.read_text()[-3000:]}"
        assert "queued prefetch job 1" in prefetch.stdout
        assert "job 1 succeeded" in prefetch.stdout and "6/6 blobs" in prefetch.stdout
        assert "Task registry.prefetch[" in run.log.read_text(), "done by the embedded worker"
        stored = {p.name for p in (run.data_dir / "blobs").rglob("*") if p.is_file()}
        assert stored == {blob.digest.split(":")[1] for blob in images.big.blobs}
        assert all(upstream.blob_gets(blob.digest, since=mark) == 1 for blob in images.big.blobs)
        assert (run.data_dir / "broker" / "queue").is_dir() and not any((run.data_dir / "broker" / "queue").iterdir())

        run.process.send_signal(signal.SIGTERM)
        assert run.wait_until_all_stopped(), "web server, worker and scheduler have all stopped"
