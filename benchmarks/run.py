"""`make bench`: Mirrorsite against Distribution in proxy mode, side by side.

    python -m benchmarks.run [--rounds N --large-layer-mib M --only-scaled ...]   (see --help)

For each setup (single-node, then scaled: two replicas of each system on S3) starts a fresh
upstream and both systems, measures both the same way, prints the tables, writes
benchmarks/results/latest.{json,md} (the only home of dated figures).
Exits non-zero when a measurement could not be made (not when a target is missed).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
import datetime as dt
from pathlib import Path
import signal
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import measure, report  # noqa: E402
from benchmarks.measure import Bench, median  # noqa: E402
from benchmarks.memory import PeakMemory  # noqa: E402
from benchmarks.params import MiB, Params, parse_args  # noqa: E402
from benchmarks.systems import Stack, System, check_tools, running_scaled_stack, running_stack  # noqa: E402
from benchmarks.workload import prepare  # noqa: E402


class Runner:
    """Runs one setup's steps in a fixed, bounded order, collecting figures, details and errors.

    The setups differ in what is started and which figures they report, not in how a figure is measured."""

    def __init__(self, params: Params, setup: str = "single") -> None:
        self.setup = setup
        self.params = params.scaled() if setup == "scaled" else params
        self.wanted = {f.key for f in report.figures(self.params, setup)}
        self.t0 = time.monotonic()  # the time limit holds for each setup
        self.values: dict[str, dict[str, float]] = {s: {} for s in report.SYSTEMS}
        self.details: dict[str, dict[str, Any]] = {s: {} for s in report.SYSTEMS}
        self.errors: list[str] = []
        self.mirror_tag_ttl: int | None = None

    def say(self, msg: str) -> None:
        print(f"[{self.setup} {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def error(self, msg: str) -> None:
        self.errors.append(msg if self.setup == "single" else f"{self.setup}: {msg}")

    def stack(self) -> AbstractContextManager[Stack]:
        p = self.params
        if self.setup == "scaled":
            return running_scaled_stack(p.scaled_database_url, p.scaled_redis_url, p.mirror_env, keep=p.keep_workdir)
        return running_stack(p.mirror_env, keep=p.keep_workdir)

    def step(self, name: str, system: System, fn: Callable[[], Any]) -> Any:
        """One measurement; a failure is recorded and the run goes on with the next one."""
        if time.monotonic() - self.t0 > self.params.time_limit:
            self.error(f"{name} ({system.key}): not run, time limit of {self.params.time_limit:g} s reached")
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            self.error(f"{name} ({system.key}): {type(e).__name__}: {e}")
            self.say(f"{name} on {system.key} failed: {e}")
            if not system.alive():
                self.say(f"{system.key} is not running any more; its log ends:\n{system.log_tail()}")
            return None

    def run(self) -> None:
        p = self.params
        with self.stack() as stack:
            self.mirror_tag_ttl = stack.mirror_tag_ttl
            if p.keep_workdir:
                self.say(f"keeping storage and logs in {stack.workdir}")
            systems = stack.systems
            self.say(
                f"upstream {stack.upstream.host}, "
                + ", ".join(f"{s.key} {' '.join(s.hosts)}" for s in systems)
                + "; pushing images"
            )
            workload = prepare(stack.upstream, p, [s.key for s in systems])
            bench = Bench(stack, p, workload)

            def order(round_: int) -> list[System]:  # alternate who goes first, so neither always warms the disk
                return systems if round_ % 2 == 0 else systems[::-1]

            # One small pull first, so neither system's first-request costs (upstream token and
            # connection, lazy imports) land in the first cold round; the image stays for the manifest load.
            for s in systems:
                self.step("warm-up", s, lambda s=s: measure.warm_up(bench, s, workload.manifest))
            self.cold_pulls(bench, order)
            self.concurrent(bench, order)
            for s in systems:
                self.step("warm-up", s, lambda s=s: measure.warm_up(bench, s, workload.large))
            self.throughput(bench, order)
            self.manifests(bench, order)
            for s in systems if "tag_pulls_upstream_requests" in self.wanted else ():
                res = self.step("tag pulls", s, lambda s=s: measure.tag_pulls(bench, s))
                if res:
                    self.values[s.key]["tag_pulls_upstream_requests"] = res["upstream_requests"]
                    self.details[s.key]["tag_pulls"] = res
                    self.say(f"{p.tag_pulls} tag pulls via {s.key}: {res['upstream_requests']} upstream requests")

    def cold_pulls(self, bench: Bench, order: Callable[[int], list[System]]) -> None:
        runs: dict[str, list[dict]] = {s: [] for s in report.SYSTEMS}
        for r in range(self.params.rounds):
            for s in order(r):
                res = self.step(
                    "cold pull",
                    s,
                    lambda s=s, r=r: measure.cold_then_warm_pull(bench, s, bench.workload.cold[s.key][r]),
                )
                if res:
                    runs[s.key].append(res)
                    self.say(
                        f"cold/warm pull via {s.key}, round {r + 1}: {res['cold_s']:.2f} s / {res['warm_s']:.2f} s"
                    )
        for key, rs in runs.items():
            if rs:
                self.values[key]["cold_pull_s"] = median([x["cold_s"] for x in rs])
                self.values[key]["warm_pull_s"] = median([x["warm_s"] for x in rs])
                self.values[key]["cold_pull_gets_per_blob"] = max(g for x in rs for g in x["gets_per_blob"].values())
                self.details[key]["cold_pulls"] = rs

    def concurrent(self, bench: Bench, order: Callable[[int], list[System]]) -> None:
        for s in order(0):
            res = self.step(
                "concurrent cold pulls",
                s,
                lambda s=s: measure.concurrent_cold_pulls(bench, s, bench.workload.crowd[s.key]),
            )
            if not res:
                continue
            gets = list(res["gets_per_blob"].values())
            self.values[s.key]["concurrent_cold_s"] = res["seconds"]
            self.values[s.key]["concurrent_cold_gets_per_blob"] = max(gets)
            self.details[s.key]["concurrent_cold"] = res
            if res["failed_clients"]:
                self.error(
                    f"concurrent cold pulls ({s.key}): {res['failed_clients']} of {res['clients']} clients failed: {res['failures'][:1]}"
                )
            self.say(
                f"{res['clients']} concurrent cold pulls via {s.key}: {res['seconds']:.2f} s, "
                f"upstream GETs per blob {sorted(gets)}, {res['failed_clients']} failed"
            )

    def throughput(self, bench: Bench, order: Callable[[int], list[System]]) -> None:
        # Memory is sampled while the most clients pull (when the setup reports it).
        top = max(self.params.blob_clients) if "peak_rss_mib" in self.wanted else None
        for clients in self.params.blob_clients:
            runs: dict[str, list[dict]] = {s: [] for s in report.SYSTEMS}
            for r in range(self.params.rounds):
                for s in order(r):

                    def one(s: System = s, clients: int = clients) -> dict:
                        if clients != top:
                            return measure.blob_throughput(bench, s, clients)
                        with PeakMemory(s.pids()) as mem:  # the memory figure: while the most clients pull
                            res = measure.blob_throughput(bench, s, clients)
                        res.update(
                            peak_rss_mib=mem.peak_rss / MiB,
                            peak_pss_mib=mem.peak_pss / MiB,
                            memory_samples=mem.samples,
                            rss_at_peak_mib=[(n, round(b / MiB, 1)) for n, b in mem.breakdown],
                        )
                        return res

                    res = self.step(f"blob throughput x{clients}", s, one)
                    if not res:
                        continue
                    if res["incomplete"]:
                        self.error(
                            f"blob throughput x{clients} ({s.key}): {res['incomplete']} incomplete downloads {res['errors'][:1]}"
                        )
                        continue
                    runs[s.key].append(res)
                    self.say(
                        f"{clients} clients on the large blob via {s.key}: {res['mib_per_s']:.0f} MiB/s"
                        + (f", peak RSS {res['peak_rss_mib']:.0f} MiB" if clients == top else "")
                    )
            for key, rs in runs.items():
                if not rs:
                    continue
                self.values[key][f"blob_mib_s_{clients}"] = median([x["mib_per_s"] for x in rs])
                self.details[key][f"blob_throughput_{clients}"] = rs
                if clients == top:
                    self.values[key]["peak_rss_mib"] = max(x["peak_rss_mib"] for x in rs)

    def manifests(self, bench: Bench, order: Callable[[int], list[System]]) -> None:
        for i, by in enumerate(("digest", "tag")):
            for s in order(i):
                res = self.step(f"manifest by {by}", s, lambda s=s, by=by: measure.manifest_load(bench, s, by))
                if not res:
                    continue
                self.values[s.key][f"manifest_rps_{by}"] = res["rps"]
                self.details[s.key][f"manifest_{by}"] = res
                if res["errors"]:
                    self.error(f"manifest by {by} ({s.key}): {res['errors']} of {res['requests']} requests failed")
                self.say(
                    f"manifest by {by} via {s.key}: {res['rps']:.0f} req/s, "
                    f"{res['upstream_requests']} upstream requests meanwhile"
                )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)

    def terminate(signum: int, frame: object) -> None:  # SIGTERM: stop everything like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    check_tools(params.loadgen)
    load_before = report.load_average()
    started, t0 = _now(), time.monotonic()
    runners: list[Runner] = []
    interrupted = False
    for setup in params.setups:
        runner = Runner(params, setup)
        runners.append(runner)
        try:
            runner.run()
        except KeyboardInterrupt:
            interrupted = True
            runner.error("interrupted")
            break
        except Exception as e:  # noqa: BLE001 - start-up failures still produce a report
            runner.error(f"run: {type(e).__name__}: {e}")
    duration = time.monotonic() - t0
    errors = [e for r in runners for e in r.errors]
    ttl = next((r.mirror_tag_ttl for r in runners if r.mirror_tag_ttl is not None), None)
    measured = {r.setup: (r.params, r.values, r.details) for r in runners}
    result = report.build(params, measured, errors, started, _now(), duration, ttl, load_before)
    js, md = report.write(result, params.out)
    print(report.text_table(result))
    print(f"\nMachine: {report.machine_line(result)}")
    print(f"\nwritten: {js}, {md} ({duration:.0f} s)")
    if interrupted:
        return 130
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
