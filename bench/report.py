"""What a run found, told: the versions and the machine, the ratios, the printed report, the
README block (the chart is `chart.py`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from bench.common import BENCH_DIR, PROJECT_ROOT, SIDES, run_checked
from bench.harness import service_pool_size
from bench.mfa import markdown_lines as mfa_markdown_lines
from bench.mfa import report_lines as mfa_report_lines
from bench.suite import FIGURE_KEYS, FIGURES, GROWTH_TABLE, SIDE_LABEL

SERVICE_PACKAGES = [
    "Quart",
    "Hypercorn",
    "uvloop",
    "SQLAlchemy",
    "aiosqlite",
    "asyncpg",
    "python-jose",
    "bcrypt",
    "pydantic",
]
REFERENCE_PACKAGES = [
    "Flask",
    "Flask-JWT-Extended",
    "PyJWT",
    "Flask-SQLAlchemy",
    "SQLAlchemy",
    "gunicorn",
    "bcrypt",
    "psycopg",
    "psycopg-binary",
]


def package_versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import json, sys, sqlite3, importlib.metadata as m\n"
        "out = {}\n"
        f"for name in {names!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: out[name] = None\n"
        "out['python'] = sys.version.split()[0]\n"
        "out['sqlite'] = sqlite3.sqlite_version\n"
        "print(json.dumps(out))\n"
    )
    return json.loads(run_checked([str(python), "-c", code], timeout=60).strip().splitlines()[-1])


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": os_name,
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def service_revision() -> dict[str, Any]:
    """The service's git commit, and whether the work tree had uncommitted changes."""
    try:
        commit = subprocess_output(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"]).strip()
        status = subprocess_output(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain"])
    except OSError:
        return {"commit": None, "dirty": None}
    return {"commit": commit[:12] or None, "dirty": bool(status.strip())}


def wrk_version(wrk: str) -> str:
    try:
        result = subprocess_output([wrk, "-v"])
    except OSError:
        return "unknown"
    first = result.splitlines()[0] if result else "unknown"
    return first.split(" [")[0]


def subprocess_output(args: list[str]) -> str:
    result = subprocess.run(  # noqa: S603
        args, capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout + result.stderr


def ratio(this: float, flask: float) -> float | None:
    return round(this / flask, 3) if flask else None


def apply_bound(
    results: dict[str, Any], scaling: dict[str, Any] | None, bound: dict[str, Any]
) -> None:
    """Login throughput as a percentage of the bcrypt bound (known at the end of the run)."""
    per_s = bound["bound_per_s"]
    for sides in results.values():
        for side in SIDES:
            figures = sides[side]["figures"]
            figures["login_pct_of_bound"] = round(100 * figures["login_rps"] / per_s, 3)
    for row in (scaling or {}).get("workers", {}).values():
        for side in SIDES:
            row[side]["login_pct_of_bound"] = round(100 * row[side]["login_rps"] / per_s, 2)


def add_ratios(results: dict[str, Any]) -> None:
    for sides in results.values():
        sides["ratio"] = {
            key: ratio(sides["service"]["figures"][key], sides["flask"]["figures"][key])
            for key in FIGURE_KEYS
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def print_report(result: dict[str, Any]) -> None:
    meta = result["meta"]
    machine = meta["machine"]
    print()
    print("=" * 78)
    print(f"Quart Auth API vs Flask reference — {meta['date']}")
    print(f"command: {meta['command']}")
    revision = meta.get("service_revision") or {}
    if revision.get("commit"):
        dirty = " with uncommitted changes" if revision.get("dirty") else ""
        print(f"service: commit {revision['commit']}{dirty}")
    print(
        f"machine: {machine['cores']} cores, {machine['cpu']}, {machine['ram_gib']} GiB, "
        f"{machine['os']}; load average at start {machine['load_average_at_start']}"
    )
    versions = meta["versions"]
    print(
        "this: "
        + ", ".join(f"{k} {v}" for k, v in versions["service"].items() if v)
        + "\nFlask: "
        + ", ".join(f"{k} {v}" for k, v in versions["reference"].items() if v)
        + f"\n{versions['wrk']}"
        + (f", PostgreSQL {versions['postgresql']}" if versions.get("postgresql") else "")
    )
    bound = result["bcrypt"]
    print(
        f"bcrypt cost {bound['rounds']}: {bound['seconds_per_hash'] * 1000:.1f} ms per hash, "
        f"bound {bound['bound_per_s']:.2f}/s on {bound['cores']} cores"
    )
    plan = meta["plan"]
    print(
        f"{plan['workers']} worker(s) each (Flask: gunicorn {plan['reference_worker_class']}), "
        f"{plan['duration']:g}s per figure, {plan['connections']} connections "
        f"({plan['login_connections']} for login/register; probe {plan['probe_connections']} "
        f"connections, {plan['probe_delay_ms']} ms apart); this service's DB_POOL_SIZE "
        f"{service_pool_size(plan['connections'], plan['workers'])} per worker"
    )
    for backend, sides in result["results"].items():
        print()
        print(f"{backend:46} {'this':>11} {'Flask':>11} {'this/Flask':>11}")
        for key, label, unit, better in FIGURES:
            this = sides["service"]["figures"][key]
            flask = sides["flask"]["figures"][key]
            r = sides["ratio"][key]
            print(
                f"{label + ' (' + unit + ')':46} {fmt(this):>11} {fmt(flask):>11} "
                f"{(fmt(r) + 'x') if r is not None else '-':>11}  ({better} is better)"
            )
    scaling = result.get("scaling")
    if scaling and scaling["workers"]:
        print()
        print(f"scaling on {scaling['backend']}")
        head = ("workers", "me req/s this", "Flask", "login req/s this", "Flask")
        print(f"{head[0]:>7} {head[1]:>14} {head[2]:>9} {head[3]:>17} {head[4]:>9}")
        for workers, row in scaling["workers"].items():
            print(
                f"{workers:>7} {fmt(row['service']['me_rps']):>14} {fmt(row['flask']['me_rps']):>9}"
                f" {fmt(row['service']['login_rps']):>17} {fmt(row['flask']['login_rps']):>9}"
            )
    growth = result.get("growth")
    if growth and growth["rows"]:
        print()
        print("GET /auth/me as the per-request table grows (PostgreSQL)")
        for rows, sides in growth["rows"].items():
            for side, row in sides.items():
                print(
                    f"{int(rows):>9} rows {SIDE_LABEL[side]:13} ({GROWTH_TABLE[side]}): "
                    f"{fmt(row['me_rps'])} req/s, p50 {fmt(row['me_p50_ms'])} ms, "
                    f"p99 {fmt(row['me_p99_ms'])} ms"
                )
    if result.get("mfa"):
        print()
        print("\n".join(mfa_report_lines(result["mfa"])))
    print("=" * 78)


README = BENCH_DIR / "README.md"
README_START = "<!-- latest result: written by bench/run.py -->"
README_END = "<!-- end of latest result -->"


def markdown(result: dict[str, Any]) -> str:
    """The latest result for bench/README.md: what ran where and when, then the figures."""
    meta = result["meta"]
    machine = meta["machine"]
    revision = meta.get("service_revision") or {}
    dirty = " (with uncommitted changes)" if revision.get("dirty") else ""
    bound = result["bcrypt"]
    plan = meta["plan"]
    lines = [
        f"`{meta['command']}`, {meta['date']}, on {machine['cores']} cores "
        f"({machine['cpu']}), {machine['ram_gib']} GiB, {machine['os']}; load average "
        f"{machine['load_average_at_start']} at the start, "
        f"{machine.get('load_average_at_end', '?')} at the end. Service commit "
        f"{revision.get('commit') or '?'}{dirty}; {plan['workers']} worker(s) per side, "
        f"{plan['duration']:g} s per figure, bcrypt cost {bound['rounds']} "
        f"({bound['seconds_per_hash'] * 1000:.0f} ms per hash, bound "
        f"{bound['bound_per_s']:.2f}/s).",
        "",
    ]
    backends = list(result["results"])
    head = "| figure | " + " | ".join(f"{b}: this | Flask | this/Flask" for b in backends) + " |"
    lines += [head, "|---|" + "---:|---:|---:|" * len(backends)]
    for key, label, unit, _better in FIGURES:
        cells = []
        for backend in backends:
            sides = result["results"][backend]
            r = sides["ratio"][key]
            cells += [
                fmt(sides["service"]["figures"][key]),
                fmt(sides["flask"]["figures"][key]),
                f"{fmt(r)}×" if r is not None else "-",
            ]
        lines.append(f"| {label.strip()} ({unit}) | " + " | ".join(cells) + " |")
    scaling = result.get("scaling")
    if scaling and scaling["workers"]:
        lines += [
            "",
            f"Scaling ({scaling['backend']}), req/s:",
            "",
            "| workers | /auth/me this | Flask | login this | Flask |",
            "|---:|---:|---:|---:|---:|",
        ]
        for workers, row in scaling["workers"].items():
            lines.append(
                f"| {workers} | {fmt(row['service']['me_rps'])} | {fmt(row['flask']['me_rps'])}"
                f" | {fmt(row['service']['login_rps'])} | {fmt(row['flask']['login_rps'])} |"
            )
    growth = result.get("growth")
    if growth and growth["rows"]:
        lines += [
            "",
            "GET /auth/me as the table checked per request grows (PostgreSQL), p50 / p99 ms:",
            "",
            "| rows | this (auth_sessions) | Flask (token_blocklist) |",
            "|---:|---:|---:|",
        ]
        for rows, sides in growth["rows"].items():
            this, flask = sides["service"], sides["flask"]
            lines.append(
                f"| {int(rows):,} | {fmt(this['me_p50_ms'])} / {fmt(this['me_p99_ms'])} "
                f"| {fmt(flask['me_p50_ms'])} / {fmt(flask['me_p99_ms'])} |"
            )
    if result.get("mfa"):
        lines += ["", *mfa_markdown_lines(result["mfa"])]
    return "\n".join(lines) + "\n"


def publish_readme(result: dict[str, Any]) -> None:
    """Replace the latest-result block of bench/README.md (between its two markers)."""
    text = README.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    block = f"{README_START}\n{markdown(result)}{README_END}"
    README.write_text(text[:start] + block + text[end + len(README_END) :])
