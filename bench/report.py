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

from bench.common import ALL_SIDES, BENCH_DIR, CEILING, PROJECT_ROOT, SIDES, run_checked
from bench.harness import service_pool_size
from bench.mfa import markdown_lines as mfa_markdown_lines
from bench.mfa import report_lines as mfa_report_lines
from bench.rounds import conclude, spread
from bench.suite import FIGURE_KEYS, FIGURES
from bench.sweeps import GROWTH_KEYS, GROWTH_TABLE, SCALING_KEYS

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
#: A table of the report: its title, its head and its rows of cells.
Table = tuple[str, list[str], list[list[str]]]
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


def conclude_results(
    results: dict[str, Any],
    scaling: dict[str, Any] | None,
    growth: dict[str, Any] | None,
    bound: dict[str, Any],
) -> None:
    """Once the bcrypt bound is final: each round's login throughput as a percentage of
    it, then every side's medians and every ratio, round by round (rounds.conclude)."""
    per_s = bound["bound_per_s"]
    rows = list((scaling or {}).get("workers", {}).values())
    for group in [*results.values(), *rows]:
        for side in (side for side in ALL_SIDES if side in group):
            for found in group[side]["rounds"]:
                if "login_rps" in found:  # the ceiling's scaling rounds have /auth/me only
                    found["login_pct_of_bound"] = round(100 * found["login_rps"] / per_s, 3)
    for group in results.values():  # login ÷ bcrypt flat out, round by round
        flat = group["flat_out_per_s"]
        group["flat_out"] = {
            "per_s": spread(flat),
            "pct_of_bound": spread([100 * rate / per_s for rate in flat]),
        }
        for side in (side for side in ALL_SIDES if side in group):
            for found, rate in zip(group[side]["rounds"], flat, strict=True):
                share = 100 * found["login_rps"] / rate if rate else 0.0
                found["login_pct_of_flat_out"] = round(share, 3)
    for group in results.values():
        conclude(group, FIGURE_KEYS, nest="figures")
    for group in rows:
        conclude(group, SCALING_KEYS)
    for group in (growth or {}).get("rows", {}).values():
        conclude(group, GROWTH_KEYS)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def spread_text(found: dict[str, Any] | None, mark: str = "×") -> str:
    """A ratio of the rounds: `median× (min–max)`."""
    if found is None:
        return "-"
    return f"{fmt(found['median'])}{mark} ({fmt(found['min'])}–{fmt(found['max'])})"


def cells(group: dict[str, Any], key: str, nest: str | None = None) -> list[str]:
    """One figure of a group: this, Flask, the ceiling's (or -), this/Flask, this/ceiling."""

    def value(side: str) -> str:
        found = group.get(side)
        found = found.get(nest) if found and nest else found
        return fmt(found.get(key)) if found and key in found else "-"

    ceiling = (group.get("ceiling_ratio") or {}).get(key)
    return [
        *map(value, (*SIDES, CEILING)),
        spread_text(group["ratio"].get(key)),
        spread_text(ceiling),
    ]


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
    print("\n".join(flat_out_lines(result)))
    plan = meta["plan"]
    print(
        f"{plan['workers']} worker(s) each (Flask: gunicorn {plan['reference_worker_class']}), "
        f"{plan['duration']:g}s per figure, {plan['connections']} connections "
        f"({plan['login_connections']} for login/register; probe {plan['probe_connections']} "
        f"connections, {plan['probe_delay_ms']} ms apart); this service's DB_POOL_SIZE "
        f"{service_pool_size(plan['connections'], plan['workers'])} per worker"
    )
    print(
        f"{plan.get('rounds', 1)} interleaved rounds (the sides' order rotates); a figure is "
        "the median of its rounds, a ratio the median of the rounds' ratios (min-max)"
    )
    for title, head, rows in tables(result, better=True):
        print()
        print(title)
        widths = [max(len(cell) for cell in column) for column in zip(head, *rows, strict=True)]
        for row in (head, *rows):
            first, *rest = (cell.replace("×", "x") for cell in row)
            print(
                f"{first:{widths[0]}}  "
                + "  ".join(f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True))
            )
    if result.get("mfa"):
        print()
        print("\n".join(mfa_report_lines(result["mfa"])))
    print("=" * 78)


def flat_out_lines(result: dict[str, Any]) -> list[str]:
    """bcrypt flat out, per backend: what the machine hashed in each round's login window
    with no server (bench/hashing.py), against the bound."""
    lines = []
    for backend, group in result["results"].items():
        found = group["flat_out"]
        lines.append(
            f"bcrypt flat out ({backend}'s rounds; a process per core, no server, in the login "
            f"figure's window): {spread_text(found['per_s'], '/s')}, "
            f"{spread_text(found['pct_of_bound'], '%')} of the bound"
        )
    return lines


def tables(result: dict[str, Any], *, better: bool = False) -> list[Table]:
    """The report's tables (printed and in the README): title, head, rows of cells."""
    found: list[Table] = []
    ratios = ["this/Flask", "this/ceiling"]
    for backend, group in result["results"].items():
        rows = [
            [f"{label.strip()} ({unit})", *cells(group, key, "figures")]
            + ([f"{side} is better"] if better else [])
            for key, label, unit, side in FIGURES
        ]
        head = ["figure", "this", "Flask", "ceiling", *ratios] + ([""] if better else [])
        found.append((f"{backend}:", head, rows))
    scaling = result.get("scaling") or {}
    if scaling.get("workers"):
        rows = [
            [workers, *cells(row, "me_rps"), *cells(row, "login_rps")[:2]]
            for workers, row in scaling["workers"].items()
        ]
        head = ["workers", "/auth/me this", "Flask", "ceiling", *ratios, "login this", "Flask"]
        found.append((f"Scaling ({scaling['backend']}), req/s:", head, rows))
    growth = result.get("growth") or {}
    if growth.get("rows"):
        rows = []
        for size, group in growth["rows"].items():
            p50, p99 = cells(group, "me_p50_ms"), cells(group, "me_p99_ms")
            rows.append([f"{int(size):,}", f"{p50[0]} / {p99[0]}", f"{p50[1]} / {p99[1]}", p99[3]])
        head = [
            "rows",
            f"this ({GROWTH_TABLE['service']})",
            f"Flask ({GROWTH_TABLE['flask']})",
            "p99 this/Flask",
        ]
        title = "GET /auth/me as the table checked per request grows (PostgreSQL), p50 / p99 ms:"
        found.append((title, head, rows))
    return found


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
    lines.append(
        f"{plan.get('rounds', 1)} interleaved rounds, the sides' order rotating: a figure is "
        "the median of its rounds, a ratio the median of the rounds' ratios (min–max). The "
        "ceiling is bare Quart + hypercorn + uvloop with no database: decoding the JWT for "
        "/auth/me, one bcrypt check and two tokens for a login (bench/ceiling/)."
    )
    lines += ["", *flat_out_lines(result)]
    for title, head, rows in tables(result):
        lines += ["", title, "", "| " + " | ".join(head) + " |"]
        lines.append("|---|" + "---:|" * (len(head) - 1))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
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
