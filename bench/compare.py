"""GET /auth/me of this checkout against another revision of the service, in one run.

    python -m bench.run --compare REV            # `make bench-compare BASELINE=REV`

Both revisions serve at once, with the same workers, settings and Python, each on a
fresh database of its own (the baseline's files come from `git archive REV`), and are
seeded through the API. Then wrk drives `GET /auth/me` against one and the other in
turn, A B A B ..., `--rounds` times, so that the machine's drift falls on both alike.
Per backend it reports each side's median req/s (with min-max) and p99, and the ratio
this/baseline of each round: its median and its min-max.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import PROJECT_ROOT, BenchError, run_checked
from bench.harness import Server, fresh_database, service_pool_size, start_server
from bench.load import Load
from bench.suite import Bench

SIDES = ("this", "baseline")


@contextmanager
def revision_files(revision: str, work: Path) -> Iterator[tuple[Path, str]]:
    """The tracked files of `revision`, unpacked into `work`; the folder and the commit."""
    commit = run_checked(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        timeout=30,
    ).strip()
    folder = work / f"revision-{commit[:12]}"
    archive = subprocess.run(  # noqa: S603 (a fixed git command)
        ["git", "-C", str(PROJECT_ROOT), "archive", "--format=tar", commit],  # noqa: S607
        capture_output=True,
        timeout=120,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {commit[:12]} failed: {archive.stderr.decode()[:500]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    yield folder, commit[:12]


def compare(bench: Bench, revision: str, rounds: int) -> dict[str, Any]:
    """Interleaved rounds of GET /auth/me, this checkout against `revision`, per backend."""
    result: dict[str, Any] = {"rounds": rounds, "backends": {}}
    with revision_files(revision, bench.work) as (root, commit):
        result["baseline_commit"] = commit
        bench.say(f"compare: this checkout against {revision} ({commit}), {rounds} rounds")
        for backend in bench.plan.backends:
            with ExitStack() as stack:
                servers = {
                    side: stack.enter_context(_serve(bench, backend, side, root)) for side in SIDES
                }
                loads = {side: _prepared_load(bench, server) for side, server in servers.items()}
                measured = []
                for number in range(1, rounds + 1):
                    row = {}
                    for side in SIDES:  # A B A B ...
                        run = bench.run_load(
                            servers[side], loads[side], f"GET /auth/me {side} #{number}"
                        )
                        row[side] = {"rps": round(run.rps, 2), "p99_ms": run.latency_ms["p99"]}
                    measured.append(row)
            result["backends"][backend] = summarize(measured)
    return result


@contextmanager
def _serve(bench: Bench, backend: str, side: str, root: Path) -> Iterator[Server]:
    plan = bench.plan
    with fresh_database(backend, f"compare_{side}", bench.work, bench.pg) as url:
        log = bench.logs / f"compare-{backend}-{side}.log"
        pool = service_pool_size(plan.connections, plan.workers)
        with start_server(
            bench.sides,
            "service",
            url,
            plan.workers,
            log,
            pool_size=pool,
            root=PROJECT_ROOT if side == "this" else root,
        ) as server:
            yield server


def _prepared_load(bench: Bench, server: Server) -> Load:
    """Seed the server and warm it up; the /auth/me load over its tokens."""
    _, files = bench.seed(server, bench.plan.seed_users, "compare")
    load = bench.load("me", connections=bench.plan.connections, lines=files["access"])
    bench.wrk.run(server.base_url, replace(load, duration=bench.warmup))
    return load


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each side's median, min and max req/s and median p99; the ratio of each round."""
    summary: dict[str, Any] = {"rounds": rounds}
    for side in SIDES:
        rps = [row[side]["rps"] for row in rounds]
        p99 = [row[side]["p99_ms"] for row in rounds]
        summary[side] = {
            "rps_median": round(statistics.median(rps), 2),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p99_ms_median": round(statistics.median(p99), 2),
        }
    ratios = [
        row["this"]["rps"] / row["baseline"]["rps"] for row in rounds if row["baseline"]["rps"]
    ]
    summary["ratio"] = {
        "median": round(statistics.median(ratios), 3) if ratios else None,
        "min": round(min(ratios), 3) if ratios else None,
        "max": round(max(ratios), 3) if ratios else None,
    }
    return summary


def print_comparison(result: dict[str, Any], this_commit: str | None) -> None:
    print()
    print("=" * 78)
    print(
        f"GET /auth/me: this checkout ({this_commit or '?'}) against "
        f"{result['baseline_commit']}, {result['rounds']} interleaved rounds"
    )
    for backend, summary in result["backends"].items():
        ratio = summary["ratio"]
        print(f"\n{backend}")
        for side in SIDES:
            figures = summary[side]
            print(
                f"  {side:9} {figures['rps_median']:9,.1f} req/s median "
                f"({figures['rps_min']:,.1f}-{figures['rps_max']:,.1f}), "
                f"p99 {figures['p99_ms_median']:.2f} ms median"
            )
        print(f"  this/baseline per round: median {ratio['median']}, {ratio['min']}-{ratio['max']}")
    print("=" * 78)
