"""`make bench` in miniature: the same code with tiny images and one round, so the benchmark
cannot rot. Asserts that the run completes and reports every figure for both systems; speeds
are not asserted (they mean nothing at this size)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.clients import parse_wrk
from benchmarks.params import parse_args
from tests.support.mirror import PROJECT_ROOT
from tests.support.upstream_registry import REGISTRY_BIN

SMOKE_ARGS = [
    "--large-layer-mib", "2", "--layers-mib", "0.25,0.5", "--small-layer-kib", "10", "--rounds", "1",
    "--manifest-seconds", "1", "--manifest-connections", "4", "--tag-pulls", "20",
    # make test does not install wrk; the Python load is the same code path for both systems.
    "--loadgen", "python", "--time-limit", "120", "--no-readme",
]


def test_bench_smoke_run_reports_every_figure_for_both_systems(tmp_path: Path) -> None:
    missing = [t for t in ("skopeo", "curl") if shutil.which(t) is None]
    missing += [] if os.access(REGISTRY_BIN, os.X_OK) else [REGISTRY_BIN]
    assert not missing, f"missing tools (make test installs them): {missing}"

    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *SMOKE_ARGS, "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"benchmark run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"

    result = json.loads((out / "latest.json").read_text())
    assert result["errors"] == []
    keys = [f.key for f in report.figures(parse_args(SMOKE_ARGS))]
    assert [f["key"] for f in result["figures"]] == keys
    for system in report.SYSTEMS:
        for key in keys:
            value = result["systems"][system][key]
            assert isinstance(value, (int, float)), f"{system} has no {key}: {value!r}"
    assert set(result["ratios"]) == set(keys)
    assert all(t["passed"] in (True, False) for t in result["targets"]), result["targets"]
    assert result["machine"]["cores"] and result["machine"]["cpu"]
    md = (out / "latest.md").read_text()
    assert "Mirrorsite/Distribution" in md and "| Target | Result |" in md
    # The table printed at the end names both systems and every target.
    assert "Distribution (proxy)" in proc.stdout and proc.stdout.count("[PASS]") + proc.stdout.count("[FAIL]") == len(result["targets"])


def test_wrk_output_is_read() -> None:
    sample = """Running 10s test @ http://127.0.0.1:5000/v2/library/x/manifests/1
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.01ms    2.10ms  40.00ms   90.00%
    Req/Sec     1.00k    90.00     1.20k    70.00%
  20000 requests in 10.00s, 10.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   2000.00
Transfer/sec:      1.00MB
"""
    result = parse_wrk(sample)
    assert (result.requests, result.errors, result.seconds) == (20000, 10, 10.0)
    assert result.rps == pytest.approx(1999.0)
