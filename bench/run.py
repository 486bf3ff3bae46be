"""Benchmark this service against the Flask reference, in one run, on the same machine.

    python -m bench.run              # the full run (`make bench`): several minutes
    python -m bench.run --smoke      # a second per figure, SQLite, 1 worker (`make bench-smoke`)
    python -m bench.run --profile    # py-spy profiles of GET /auth/me, refresh and login
    python -m bench.run --compare REV  # GET /auth/me of this checkout against revision REV
    python -m bench.run --mfa        # only the MFA figures (bench/mfa.py; `make bench-mfa`)

For each backend (SQLite, PostgreSQL) all three sides run at once, with the same number
of workers: this service under hypercorn with uvloop and production settings, the Flask
reference under gunicorn (each on a fresh database, the same bcrypt cost), and the
ceiling (bench/ceiling/: bare Quart, hypercorn and uvloop, no database: JWT decode only for
/auth/me, one bcrypt check and two tokens for a login).
Seed users through the API, check both sides answer the same API, then measure with wrk,
figure by figure, one side after the other, in `--rounds` rounds whose order rotates:

1. GET /auth/me throughput and p50/p99 latency;
2. POST /auth/login throughput, as a percentage of the bcrypt bound (cores / seconds
   per hash, measured in this run);
3. GET /auth/me p99 (a paced probe) while logins saturate the CPU, as a ratio to its
   idle p99;
4. POST /auth/register burst throughput (a new email per request);
5. POST /auth/refresh throughput, every refresh token used exactly once (each answer's
   rotated token is queued for a later request);
6. resident memory of the server's processes, idle and at the peak under load.

The ceiling has figures 1, 2 and 6 (idle). Each figure is the median of its rounds; each
ratio (this/Flask, this/ceiling) is computed round by round: its median and min-max.
Then the scaling figures: /auth/me and login at 1, 2 and 4 workers, and /auth/me with
10 thousand vs 1 million rows in the table each side checks per request (sessions here,
the blocklist there) on PostgreSQL. Then, this service only, the MFA figures (mfa.py):
POST /auth/mfa/challenge latency against POST /auth/login, and GET /auth/me with and
without a second factor. Prints every figure for both sides with the ratio this/Flask,
writes result.json and chart.png (and bench/latest.* for the README).
Scaling and growth run `--sweep-duration` seconds per figure, interleaved the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import hashing
from bench.chart import draw
from bench.common import BENCH_DIR, PROJECT_ROOT, BenchError, WrkMissing
from bench.compare import compare, print_comparison
from bench.harness import Postgres, Sides, service_variables
from bench.load import Wrk, ensure_wrk
from bench.mfa import measure as measure_mfa
from bench.mfa import plan_problem as mfa_plan_problem
from bench.mfa import report_lines as mfa_report_lines
from bench.profile import profile
from bench.report import (
    REFERENCE_PACKAGES,
    SERVICE_PACKAGES,
    conclude_results,
    machine_info,
    package_versions,
    print_report,
    publish_readme,
    service_revision,
    wrk_version,
)
from bench.suite import CEILING_FIGURES, FIGURES, Bench, Plan
from bench.sweeps import growth as measure_growth
from bench.sweeps import scaling as measure_scaling

LATEST_JSON = BENCH_DIR / "latest.json"
LATEST_PNG = BENCH_DIR / "latest.png"
EXIT_WRK_MISSING = 3


def run_comparison(bench: Bench, revision: str, rounds: int, out: Path) -> int:
    """`--compare`: write compare.json and print the comparison."""
    try:
        result = compare(bench, revision, rounds)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(out / "work", ignore_errors=True)
    this = service_revision()
    result["this_commit"], result["this_dirty"] = this["commit"], this["dirty"]
    result["plan"] = asdict(bench.plan)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    print_comparison(result, this["commit"])
    print(f"result: {out / 'compare.json'}")
    return 0


def run_mfa(bench: Bench, meta: dict[str, Any], out: Path) -> int:
    """`--mfa`: only the MFA figures; write mfa.json and print them."""
    try:
        result = measure_mfa(bench)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(out / "work", ignore_errors=True)
    meta["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    (out / "mfa.json").write_text(json.dumps({"meta": meta, "mfa": result}, indent=2) + "\n")
    print()
    print("=" * 78)
    machine = meta["machine"]
    print(
        f"{meta['command']}, {meta['date']}, {machine['cores']} cores ({machine['cpu']}); load "
        f"average {machine['load_average_at_start']} at the start, "
        f"{machine['load_average_at_end']} at the end"
    )
    print("\n".join(mfa_report_lines(result)))
    print("=" * 78)
    print(f"result: {out / 'mfa.json'}")
    return 0


def build_plan(args: argparse.Namespace) -> Plan:
    smoke = args.smoke
    cores = os.cpu_count() or 1

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if smoke else full)

    backends = tuple(pick(args.backends, "sqlite,postgresql", "sqlite").split(","))
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown backend {backend!r}")
    scaling = pick(args.scaling_workers, "1,2,4", "")
    growth = pick(args.growth_rows, "10000,1000000", "")
    plan = Plan(
        smoke=smoke,
        duration=float(pick(args.duration, 10.0, 1.0)),
        workers=int(pick(args.workers, cores, 1)),
        backends=backends,
        bcrypt_rounds=int(pick(args.bcrypt_rounds, 12, 10)),  # production refuses less
        seed_users=int(pick(args.seed_users, 64, 8)),
        connections=int(pick(args.connections, 16, 4)),
        login_connections=int(pick(args.login_connections, 8, 2)),
        probe_connections=int(pick(args.probe_connections, 4, 2)),
        probe_delay_ms=int(pick(args.probe_delay_ms, 20, 20)),
        wrk_threads=int(pick(args.wrk_threads, 1, 1)),
        scaling_workers=tuple(int(w) for w in scaling.split(",") if w.strip()),
        scaling_backend="postgresql" if "postgresql" in backends else backends[0],
        growth_rows=tuple(int(r) for r in growth.split(",") if r.strip())
        if "postgresql" in backends
        else (),
        reference_worker_class=args.reference_worker_class,
        rounds=int(pick(args.rounds, 3, 2)),
        sweep_duration=float(pick(args.sweep_duration, 4.0, 1.0)),
        mfa_rounds=int(pick(args.mfa_rounds, 5, 3)),
        mfa_samples=int(pick(args.mfa_samples, 120, 8)),
    )
    if plan.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if problem := mfa_plan_problem(plan):
        raise SystemExit(problem)
    return plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a second per figure, SQLite, 1 worker"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of this service")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="GET /auth/me of this checkout against git revision REV, interleaved (compare.py)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds of every figure (3; smoke 2); of --compare (5; smoke 1)",
    )
    parser.add_argument(
        "--mfa", action="store_true", help="only the MFA figures of this service (mfa.py)"
    )
    parser.add_argument(
        "--mfa-rounds", type=int, help="interleaved rounds, MFA figures (5; smoke 3)"
    )
    parser.add_argument(
        "--mfa-samples", type=int, help="timed challenges, as many timed logins (120; smoke 8)"
    )
    parser.add_argument("--duration", type=float, help="seconds per figure (10; smoke 1)")
    parser.add_argument(
        "--sweep-duration", type=float, help="seconds per scaling/growth figure (4; smoke 1)"
    )
    parser.add_argument("--workers", type=int, help="workers per side (CPU count; smoke 1)")
    parser.add_argument("--backends", help="sqlite,postgresql (smoke: sqlite)")
    parser.add_argument("--bcrypt-rounds", type=int, help="bcrypt cost on both sides (12; smoke 4)")
    parser.add_argument("--seed-users", type=int, help="users seeded through the API (64)")
    parser.add_argument("--connections", type=int, help="wrk connections for me/refresh (16)")
    parser.add_argument("--login-connections", type=int, help="for login/register (8)")
    parser.add_argument("--probe-connections", type=int, help="latency probe connections (4)")
    parser.add_argument("--probe-delay-ms", type=int, help="pause between probe requests (20)")
    parser.add_argument("--wrk-threads", type=int, help="wrk threads (1)")
    parser.add_argument("--scaling-workers", help="1,2,4 ('' to skip)")
    parser.add_argument("--growth-rows", help="10000,1000000 on PostgreSQL ('' to skip)")
    parser.add_argument("--reference-worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL maintenance database; qaa_bench_* databases are created beside it",
    )
    venv_python = PROJECT_ROOT / ".venv" / "bin" / "python"
    parser.add_argument(
        "--service-python",
        type=Path,
        default=venv_python if venv_python.exists() else Path(sys.executable),
    )
    parser.add_argument("--reference-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--out", type=Path, help="result folder (bench/results/<date>)")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy result.json and chart.png to bench/latest.* (default: full runs only)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups on SIGTERM
    plan = build_plan(args)
    started = datetime.now(UTC)
    out = args.out or BENCH_DIR / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    try:
        wrk_path = ensure_wrk()
    except WrkMissing as error:
        print(f"bench: {error}", file=sys.stderr)
        return EXIT_WRK_MISSING
    pg = None
    pg_version = None
    if "postgresql" in plan.backends:
        pg = Postgres(args.pg_url)
        try:
            pg_version = pg.check()
        except BenchError as error:
            print(f"bench: PostgreSQL at {args.pg_url} unreachable: {error}", file=sys.stderr)
            return 1
    sides = Sides(
        service_python=args.service_python,
        reference_python=args.reference_python,
        reference_worker_class=plan.reference_worker_class,
        bcrypt_rounds=plan.bcrypt_rounds,
        service_variables=service_variables(args.service_python),
    )
    if (PROJECT_ROOT / ".env").exists():
        print("bench: note: .env exists; the service reads it for every setting not set here")
    bench = Bench(plan, sides, Wrk(wrk_path, out / "work"), pg, out)
    if args.profile:
        return profile(bench, out)
    if args.compare:
        return run_comparison(bench, args.compare, args.rounds or (1 if plan.smoke else 5), out)

    command = os.environ.get("BENCH_COMMAND") or "python -m bench.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    meta = {
        "command": command.strip(),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "plan": asdict(plan),
        "versions": {
            "service": package_versions(sides.service_python, SERVICE_PACKAGES),
            "reference": package_versions(sides.reference_python, REFERENCE_PACKAGES),
            "wrk": wrk_version(wrk_path),
            "postgresql": pg_version,
        },
        "service_revision": service_revision(),
    }
    if args.mfa:
        return run_mfa(bench, meta, out)
    try:
        bench.bound = hashing.bound(plan.bcrypt_rounds)
        bench.say(
            f"bcrypt cost {plan.bcrypt_rounds}: {bench.bound['seconds_per_hash'] * 1000:.1f} ms "
            f"per hash; bound {bench.bound['bound_per_s']:.2f} hashes/s"
        )
        results = bench.main_figures()
        scaling = measure_scaling(bench) if plan.scaling_workers else None
        growth = measure_growth(bench) if plan.growth_rows and pg else None
        mfa = measure_mfa(bench)
        bench.bound = hashing.bound(plan.bcrypt_rounds, *bench.bound["timings"])
        conclude_results(results, scaling, growth, bench.bound)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(out / "work", ignore_errors=True)
    meta["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    result = {
        "meta": meta,
        "bcrypt": bench.bound,
        "figures": {
            key: {"label": label, "unit": unit, "better": better}
            for key, label, unit, better in FIGURES
        },
        "ceiling_figures": list(CEILING_FIGURES),
        "results": results,
        "scaling": scaling,
        "growth": growth,
        "mfa": mfa,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    if not args.no_chart:
        draw(result, out / "chart.png")
    publish = args.publish if args.publish is not None else not plan.smoke
    if publish:
        shutil.copyfile(out / "result.json", LATEST_JSON)
        if not args.no_chart:
            shutil.copyfile(out / "chart.png", LATEST_PNG)
        publish_readme(result)
    print(
        f"result: {out / 'result.json'}"
        + ("" if args.no_chart else f", chart: {out / 'chart.png'}")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
