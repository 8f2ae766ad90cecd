"""What one benchmark run does: sizes, rounds, client counts, durations (all CLI flags).

The defaults are the full `make bench`; the smoke test passes tiny sizes and one round.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

MiB = 1024 * 1024
SETUPS = ("single", "scaled")  # the single-node setup, then two replicas each on S3
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"


@dataclass(frozen=True)
class Params:
    large_layer_mib: float = 200.0  # the one-layer image whose blob the throughput runs download
    layers_mib: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0)  # the multi-layer image
    small_layer_kib: float = 100.0  # the image behind the manifest and tag measurements
    rounds: int = 5  # repetitions of each timed measurement (median reported); cold pulls use a fresh image per round
    concurrent_pulls: int = 16
    blob_clients: tuple[int, ...] = (1, 8, 32)
    manifest_seconds: float = 10.0
    manifest_connections: int = 16
    tag_pulls: int = 100
    loadgen: str = "wrk"  # "wrk" or "python" (a bounded threaded load); the same for both systems
    client_timeout: float = 300.0  # any single client process (skopeo, curl, wrk)
    time_limit: float = 480.0  # steps not started by then are reported as errors (the run must stay under 10 min)
    mirror_env: dict[str, str] = field(default_factory=dict)  # extra settings for Mirrorsite
    out: Path = DEFAULT_OUT
    keep_workdir: bool = False  # keep the servers' storage and logs under /tmp for a post-mortem
    setups: tuple[str, ...] = SETUPS  # which setups run (--only-scaled, --no-scaled)
    # The scaled setup: the other sizes and counts above apply to it too, except these two
    # (every blob byte there passes through the S3 server, moto's, in Python).
    scaled_large_layer_mib: float = 50.0
    scaled_blob_clients: tuple[int, ...] = (8,)
    scaled_database_url: str = (
        "postgres://postgres@127.0.0.1:5432/mirrorsite_bench"  # a name prefix; not PostgreSQL: one shared SQLite file
    )
    scaled_redis_url: str = (
        "redis://127.0.0.1:6379/6"  # the run's keys go under a prefix of their own, removed afterwards
    )

    def scaled(self) -> Params:
        """The parameters the scaled setup is measured with."""
        return replace(self, large_layer_mib=self.scaled_large_layer_mib, blob_clients=self.scaled_blob_clients)

    def as_json(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> Params:
    d = Params()
    p = argparse.ArgumentParser(
        prog="benchmarks.run",
        description="Mirrorsite vs Distribution proxy, side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--large-layer-mib", type=float, default=d.large_layer_mib, help="layer downloaded in the throughput runs"
    )
    p.add_argument(
        "--layers-mib", type=_floats, default=d.layers_mib, help="layers of the multi-layer image (comma-separated)"
    )
    p.add_argument(
        "--small-layer-kib", type=float, default=d.small_layer_kib, help="layer of the manifest and tag-pull images"
    )
    p.add_argument("--rounds", type=int, default=d.rounds, help="repetitions of the pulls and throughput runs (median)")
    p.add_argument("--concurrent-pulls", type=int, default=d.concurrent_pulls, help="simultaneous cold skopeo pulls")
    p.add_argument(
        "--blob-clients",
        type=_ints,
        default=d.blob_clients,
        help="simultaneous curl downloads of the large blob (comma-separated); memory is sampled at the largest",
    )
    p.add_argument("--manifest-seconds", type=float, default=d.manifest_seconds, help="length of each manifest load")
    p.add_argument(
        "--manifest-connections",
        type=int,
        default=d.manifest_connections,
        help="keep-alive connections of the manifest load",
    )
    p.add_argument(
        "--tag-pulls", type=int, default=d.tag_pulls, help="warm pulls of one tag whose upstream requests are counted"
    )
    p.add_argument(
        "--loadgen", choices=("wrk", "python"), default=d.loadgen, help="manifest load generator, the same for both"
    )
    p.add_argument("--client-timeout", type=float, default=d.client_timeout, help="seconds any one client may take")
    p.add_argument(
        "--time-limit",
        type=float,
        default=d.time_limit,
        help="seconds after which no new step of a setup starts (each setup has its own)",
    )
    p.add_argument(
        "--mirror-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for Mirrorsite, e.g. MIRROR_WEB_WORKERS=4 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=d.out, help="directory for latest.json and latest.md")
    p.add_argument("--keep-workdir", action="store_true", help="keep the servers' storage and logs (printed path)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--only-scaled", action="store_true", help="run only the scaled setup (two replicas each, S3)")
    which.add_argument("--no-scaled", action="store_true", help="run only the single-node setup")
    p.add_argument(
        "--scaled-large-layer-mib",
        type=float,
        default=d.scaled_large_layer_mib,
        help="scaled setup: layer downloaded (through the S3 redirect) in the throughput runs",
    )
    p.add_argument(
        "--scaled-blob-clients",
        type=_ints,
        default=d.scaled_blob_clients,
        help="scaled setup: simultaneous curl downloads of its large blob (comma-separated)",
    )
    p.add_argument(
        "--scaled-database-url",
        default=d.scaled_database_url,
        help="scaled setup: PostgreSQL server and database name prefix shared by the Mirrorsite replicas (a fresh database, dropped afterwards)",
    )
    p.add_argument(
        "--scaled-redis-url", default=d.scaled_redis_url, help="scaled setup: Redis shared by the Mirrorsite replicas"
    )
    a = p.parse_args(argv)
    if (
        a.rounds < 1
        or a.concurrent_pulls < 1
        or a.tag_pulls < 1
        or not a.blob_clients
        or not a.scaled_blob_clients
        or not a.layers_mib
    ):
        p.error("rounds, concurrent pulls, tag pulls, blob clients and layers must be at least 1")
    mirror_env = {}
    for item in a.mirror_env:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--mirror-env wants KEY=VALUE, got {item!r}")
        mirror_env[key] = value
    return Params(
        large_layer_mib=a.large_layer_mib,
        layers_mib=a.layers_mib,
        small_layer_kib=a.small_layer_kib,
        rounds=a.rounds,
        concurrent_pulls=a.concurrent_pulls,
        blob_clients=a.blob_clients,
        manifest_seconds=a.manifest_seconds,
        manifest_connections=a.manifest_connections,
        tag_pulls=a.tag_pulls,
        loadgen=a.loadgen,
        client_timeout=a.client_timeout,
        time_limit=a.time_limit,
        mirror_env=mirror_env,
        out=a.out,
        keep_workdir=a.keep_workdir,
        setups=("scaled",) if a.only_scaled else ("single",) if a.no_scaled else SETUPS,
        scaled_large_layer_mib=a.scaled_large_layer_mib,
        scaled_blob_clients=a.scaled_blob_clients,
        scaled_database_url=a.scaled_database_url,
        scaled_redis_url=a.scaled_redis_url,
    )
