"""Figures, targets and the report: a text table on stdout, JSON and Markdown under results/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import json
import os
from pathlib import Path
import platform
import re
import subprocess

from benchmarks.params import Params

SYSTEMS = ("distribution", "mirrorsite")
LABELS = {"distribution": "Distribution (proxy)", "mirrorsite": "Mirrorsite"}


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    decimals: int


def figures(params: Params, setup: str = "single") -> list[Figure]:
    """Every figure the run reports for a setup, in table order (blob client counts come from
    the params). The scaled setup leaves out the tag-pull count and memory: one server's figures."""
    n = params.concurrent_pulls
    top = max(params.blob_clients)
    large = f"{params.large_layer_mib:g} MiB"
    scaled = setup == "scaled"
    across = " across both replicas" if scaled else ""
    via = ", through the S3 redirect" if scaled else ""
    out = [
        Figure("cold_pull_s", "Cold pull of the multi-layer image, skopeo", "s", 2),
        Figure("warm_pull_s", "Warm pull of the same image" + (" from the other replica" if scaled else ""), "s", 2),
        Figure("cold_pull_gets_per_blob", "Cold pull: upstream GETs per blob (max)", "", 0),
        Figure("concurrent_cold_s", f"{n} concurrent cold pulls{across}: time until all finish", "s", 2),
        Figure(
            "concurrent_cold_gets_per_blob", f"{n} concurrent cold pulls{across}: upstream GETs per blob (max)", "", 0
        ),
        *[
            Figure(f"blob_mib_s_{c}", f"Warm {large} blob, {c} client{'s' if c > 1 else ''}{via}", "MiB/s", 0)
            for c in params.blob_clients
        ],
        Figure("manifest_rps_digest", f"Warm manifest GET by digest{across}", "req/s", 0),
        Figure("manifest_rps_tag", f"Warm manifest GET by tag{across}", "req/s", 0),
    ]
    if not scaled:
        out += [
            Figure(
                "tag_pulls_upstream_requests",
                f"Upstream requests for {params.tag_pulls} warm pulls of a tag (within the TTL)",
                "",
                0,
            ),
            Figure("peak_rss_mib", f"Peak memory (sum RSS), {top} clients on the {large} blob", "MiB", 0),
        ]
    return out


# --------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    label: str
    check: Callable[[dict, dict], bool | None]  # (figures by system, details by system) -> passed


def _ratio(values: dict, key: str) -> float | None:
    d, m = values["distribution"].get(key), values["mirrorsite"].get(key)
    if d is None or m is None or d == 0:
        return None
    return m / d


def _at_least(key: str, factor: float) -> Callable[[dict, dict], bool | None]:
    return lambda v, _d: None if _ratio(v, key) is None else _ratio(v, key) >= factor


def _one_get_each(_v: dict, d: dict) -> bool | None:
    cc = d["mirrorsite"].get("concurrent_cold")
    if not cc:
        return None
    return cc["failed_clients"] == 0 and all(g == 1 for g in cc["gets_per_blob"].values())


def targets(params: Params, setup: str = "single") -> list[Target]:
    n = params.concurrent_pulls
    if setup == "scaled":
        return [
            Target(f"{n} concurrent cold pulls across both replicas: exactly 1 upstream GET per blob", _one_get_each)
        ]

    def cold_pull(v: dict, _d: dict) -> bool | None:
        r = _ratio(v, "cold_pull_s")
        return None if r is None else r <= 1.1

    def tag_zero(v: dict, d: dict) -> bool | None:
        tp = d["mirrorsite"].get("tag_pulls")
        r = _ratio(v, "manifest_rps_tag")
        if tp is None or r is None:
            return None
        return r >= 1.0 and tp["upstream_requests"] == 0

    def memory(v: dict, _d: dict) -> bool | None:
        m = v["mirrorsite"].get("peak_rss_mib")
        return None if m is None else m < 300

    out = [Target(f"{n} concurrent cold pulls: exactly 1 upstream GET per blob", _one_get_each)]
    for c in (8, 32):
        if c in params.blob_clients:
            out.append(
                Target(f"Warm blob throughput, {c} clients: >= 1.0x Distribution", _at_least(f"blob_mib_s_{c}", 1.0))
            )
    out += [
        Target("Cold pull of the multi-layer image: <= 1.1x Distribution's time", cold_pull),
        Target("Warm manifest GET by digest: >= 0.5x Distribution's req/s", _at_least("manifest_rps_digest", 0.5)),
        Target("Warm manifest GET by tag within TTL: >= 1.0x req/s and zero upstream requests", tag_zero),
        Target(f"Peak memory, {max(params.blob_clients)} clients on the large blob: < 300 MiB (whole server)", memory),
    ]
    return out


# --------------------------------------------------------------------------- machine
def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kib = int(m.group(1)) if m else 0
    except OSError:
        pass
    os_name = platform.system()
    try:
        m = re.search(r'PRETTY_NAME="([^"]*)"', Path("/etc/os-release").read_text())
        os_name = m.group(1) if m else os_name
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
    }


def versions() -> dict:
    root = Path(__file__).resolve().parents[1]
    commit = _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return {
        "mirrorsite": f"{commit}{' (modified)' if dirty else ''}" if commit else None,
        "distribution": (_first_line(["/usr/bin/docker-registry", "--version"]) or "").rsplit(" ", 1)[-1] or None,
        "skopeo": _first_line(["skopeo", "--version"]),
        "curl": _first_line(["curl", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
    }


# --------------------------------------------------------------------------- rendering
def _fmt(value: float | None, decimals: int) -> str:
    return "—" if value is None else f"{value:,.{decimals}f}"


def _fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def rows(section: dict) -> list[list[str]]:
    out = []
    for f in section["figures"]:
        v = [section["systems"][s].get(f["key"]) for s in SYSTEMS]
        label = f"{f['label']} ({f['unit']})" if f["unit"] else f["label"]
        out.append(
            [label, _fmt(v[0], f["decimals"]), _fmt(v[1], f["decimals"]), _fmt_ratio(section["ratios"].get(f["key"]))]
        )
    return out


def sections(report: dict) -> list[tuple[str, dict]]:
    """(setup, its figures) for each setup the run measured, in run order."""
    return [(setup, report if setup == "single" else report[setup]) for setup in report["setups"]]


SCALED_TITLE = "Scaled setup: two replicas of each system, blobs in S3 (served by redirect)"


def text_table(report: dict) -> str:
    header = ["Figure", LABELS["distribution"], LABELS["mirrorsite"], "Mirrorsite/Distribution"]
    out: list[str] = []
    for setup, section in sections(report):
        body = rows(section)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]

        def line(r: list[str], widths: list[int] = widths) -> str:
            return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

        if setup == "scaled":
            out += ["", SCALED_TITLE, ""] if out else [SCALED_TITLE, ""]
        out += [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body), "", "Targets:"]
        out += [f"  [{_verdict(t['passed'])}] {t['label']}" for t in section["targets"]]
        note = memory_note(report) if setup == "single" else None
        if note:
            out += ["", note]
    if report["errors"]:
        out += ["", "Errors:", *(f"  {e}" for e in report["errors"])]
    return "\n".join(out)


def machine_line(report: dict) -> str:
    m = report["machine"]
    load = report.get("load_average_before")
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']} ({m['os']}), "
        f"load average {'?' if load is None else f'{load:.2f}'} before the run; "
        f"Mirrorsite {report['versions']['mirrorsite']}, Distribution {report['versions']['distribution']}"
    )


def _program(cmdline: str) -> str:
    """A short name for a server process, to group the memory breakdown."""
    if "gunicorn" in cmdline:
        return "gunicorn"
    if "celery" in cmdline:
        return "celery beat" if " beat" in cmdline else "celery worker"
    if "manage.py serve" in cmdline:
        return "manage.py serve"
    return Path(cmdline.split(" ", 1)[0]).name or "?"


def memory_note(report: dict) -> str | None:
    """Where Mirrorsite's memory was at its peak, by program (RSS), and the PSS total."""
    top = max(report["params"]["blob_clients"])
    runs = report["details"]["mirrorsite"].get(f"blob_throughput_{top}")
    if not runs:
        return None
    peak = max(runs, key=lambda r: r["peak_rss_mib"])
    groups: dict[str, list[float]] = {}
    for cmdline, mib in peak["rss_at_peak_mib"]:
        groups.setdefault(_program(cmdline), []).append(mib)
    parts = [f"{name} {sum(v):.0f} MiB ({len(v)} process{'es' if len(v) > 1 else ''})" for name, v in groups.items()]
    return (
        f"Mirrorsite's memory at its peak (RSS): {', '.join(parts)}; "
        f"shared pages counted once (PSS) it is {peak['peak_pss_mib']:.0f} MiB."
    )


def markdown(report: dict, heading: str = "###") -> str:
    p = report["params"]
    out = [
        f"{heading} Latest run: {report['finished_at']}",
        "",
        f"Machine: {machine_line(report)}. The run took {report['duration_s']:.0f} s "
        f"(medians of {p['rounds']} round{'s' if p['rounds'] > 1 else ''}; manifest load: "
        f"{p['loadgen']}, {p['manifest_connections']} connections, {p['manifest_seconds']:g} s; "
        f"Mirrorsite's tag TTL {report['mirror_tag_ttl']} s).",
    ]
    for setup, section in sections(report):
        if setup == "scaled":
            out += ["", f"{heading}# {SCALED_TITLE}", "", SCALED_NOTE]
        out += [
            "",
            "| Figure | Distribution (proxy) | Mirrorsite | Mirrorsite/Distribution |",
            "|---|---:|---:|---:|",
            *(f"| {' | '.join(r)} |" for r in rows(section)),
            "",
            *([memory_note(report), ""] if setup == "single" and memory_note(report) else []),
            "| Target | Result |",
            "|---|---|",
            *(f"| {t['label']} | {_verdict(t['passed'])} |" for t in section["targets"]),
        ]
    if report["errors"]:
        out += ["", "Errors:", "", *(f"- `{e}`" for e in report["errors"])]
    return "\n".join(out) + "\n"


SCALED_NOTE = (
    "Both systems' blobs are in buckets of one S3 server, moto's (Python, on the same machine), and "
    "blob GETs answer with a redirect to it: the blob throughput is mostly that server's speed, for "
    "both alike, and the ratio shows whether a system adds to it. Distribution reads each manifest "
    "from its bucket, so its manifest rates here are bound by moto's time per request. Clients take the two replicas of a system in turn; the manifest load "
    "spreads its connections over both."
)


def load_average() -> float | None:
    """1-minute load average: a busy machine (another test run) skews every figure."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _section(params: Params, setup: str, values: dict, details: dict) -> dict:
    figs = figures(params, setup)
    return {
        "figures": [f.__dict__ for f in figs],
        "systems": {s: {f.key: values[s].get(f.key) for f in figs} for s in SYSTEMS},
        "ratios": {f.key: _ratio(values, f.key) for f in figs},
        "targets": [{"label": t.label, "passed": t.check(values, details)} for t in targets(params, setup)],
        "details": details,
    }


def build(
    params: Params,
    measured: dict[str, tuple[Params, dict, dict]],
    errors: list[str],
    started: str,
    finished: str,
    duration: float,
    mirror_tag_ttl: int | None,
    load_before: float | None,
) -> dict:
    """`measured`: setup -> (its params, figures by system, details by system), for each setup run.

    The single-node figures sit at the top level (as before there was a scaled setup); the
    scaled ones under "scaled" with its own params."""
    empty = (params, {s: {} for s in SYSTEMS}, {s: {} for s in SYSTEMS})
    single, scaled = measured.get("single", empty), measured.get("scaled")
    return {
        "schema": 2,
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration,
        "machine": machine(),
        "load_average_before": load_before,
        "versions": versions(),
        "params": params.as_json(),
        "mirror_tag_ttl": mirror_tag_ttl,
        "setups": list(measured),
        **_section(single[0], "single", single[1], single[2]),
        "scaled": None
        if scaled is None
        else {
            "params": {"large_layer_mib": scaled[0].large_layer_mib, "blob_clients": scaled[0].blob_clients},
            **_section(scaled[0], "scaled", scaled[1], scaled[2]),
        },
        "errors": errors,
    }


def write(report: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "latest.json", out / "latest.md"
    js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md.write_text("# Mirrorsite vs Distribution\n\n" + markdown(report, "##"))
    return js, md
