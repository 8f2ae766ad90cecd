"""`make bench` in miniature: the same code with tiny images and one round, both setups
(single-node, and two replicas of each system on S3), so the benchmark cannot rot. Asserts that
the run completes and reports every figure of each setup for both systems; speeds are not
asserted (they mean nothing at this size)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from benchmarks import report
from benchmarks.clients import parse_wrk
from benchmarks.params import parse_args
from tests.support.databases import is_postgres, session_database_url
from tests.support.mirror import PROJECT_ROOT
from tests.support.upstream_registry import REGISTRY_BIN

SMOKE_ARGS = [
    "--large-layer-mib",
    "2",
    "--scaled-large-layer-mib",
    "2",
    "--layers-mib",
    "0.25,0.5",
    "--small-layer-kib",
    "10",
    "--rounds",
    "1",
    "--manifest-seconds",
    "1",
    "--manifest-connections",
    "4",
    "--tag-pulls",
    "20",
    # make test does not install wrk; the Python load is the same code path for both systems.
    "--loadgen",
    "python",
    "--time-limit",
    "120",
]


def test_bench_smoke_run_reports_every_figure_for_both_systems(tmp_path: Path) -> None:
    missing = [t for t in ("skopeo", "curl") if shutil.which(t) is None]
    missing += [] if os.access(REGISTRY_BIN, os.X_OK) else [REGISTRY_BIN]
    assert not missing, f"missing tools (make test installs them): {missing}"

    out = tmp_path / "results"
    # The replicas share this pass's database server (PostgreSQL pass) or one SQLite file.
    database = session_database_url() if is_postgres(session_database_url()) else ""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *SMOKE_ARGS, "--out", str(out), "--scaled-database-url", database],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"benchmark run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"

    result = json.loads((out / "latest.json").read_text())
    assert result["errors"] == []
    assert result["setups"] == ["single", "scaled"]
    params = parse_args(SMOKE_ARGS)
    for setup, section in (("single", result), ("scaled", result["scaled"])):
        keys = [f.key for f in report.figures(params.scaled() if setup == "scaled" else params, setup)]
        assert [f["key"] for f in section["figures"]] == keys
        for system in report.SYSTEMS:
            for key in keys:
                value = section["systems"][system][key]
                assert isinstance(value, (int, float)), f"{setup}: {system} has no {key}: {value!r}"
        assert set(section["ratios"]) == set(keys)
        assert all(t["passed"] in (True, False) for t in section["targets"]), section["targets"]
    # The concurrent cold pulls spread over the replicas all succeeded.
    assert all(result["scaled"]["details"][s]["concurrent_cold"]["failed_clients"] == 0 for s in report.SYSTEMS)
    assert result["machine"]["cores"] and result["machine"]["cpu"]
    md = (out / "latest.md").read_text()
    assert "Mirrorsite/Distribution" in md and md.count("| Target | Result |") == 2 and report.SCALED_TITLE in md
    # The tables printed at the end name both systems and every target.
    targets = result["targets"] + result["scaled"]["targets"]
    assert "Distribution (proxy)" in proc.stdout and proc.stdout.count("[PASS]") + proc.stdout.count("[FAIL]") == len(
        targets
    )


def test_the_setups_to_run_are_chosen_on_the_command_line() -> None:
    assert parse_args([]).setups == ("single", "scaled")
    assert parse_args(["--only-scaled"]).setups == ("scaled",)
    assert parse_args(["--no-scaled"]).setups == ("single",)
    with pytest.raises(SystemExit):
        parse_args(["--only-scaled", "--no-scaled"])
    scaled = parse_args(["--scaled-large-layer-mib", "3", "--scaled-blob-clients", "2,4"]).scaled()
    assert (scaled.large_layer_mib, scaled.blob_clients) == (3.0, (2, 4))


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
