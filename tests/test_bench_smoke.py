"""The benchmark harness works end to end, in its smoke mode (a second per figure).

This is not a timed test: it asserts that every figure was measured for both sides
(this service and the Flask reference, on SQLite, one worker each) and the ceiling's
figures (bare Quart, JWT decode only), in every interleaved round, with each ratio's
median, min and max, and the MFA figures of this service (bench/mfa.py), never how fast.
The harness needs wrk: it installs Debian's package itself when run as root; otherwise
this test is skipped, or fails when QAA_REQUIRE_WRK=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import hashing
from bench.common import BenchError
from bench.mfa import totp_code
from quart_auth_api.crypto import totp
from tests.helpers.processes import PROJECT_ROOT, SERVICE_VARIABLES

pytestmark = pytest.mark.server

SMOKE_TIMEOUT = 600
EXIT_WRK_MISSING = 3
#: The issue's figures: throughput and latency of /auth/me, login against the bcrypt
#: bound, /auth/me p99 under a login storm, register, refresh, memory.
FIGURES = (
    "me_rps",
    "me_p50_ms",
    "me_p99_ms",
    "login_rps",
    "login_pct_of_bound",
    "login_pct_of_flat_out",
    "me_idle_p99_ms",
    "me_under_login_p99_ms",
    "me_p99_under_login_ratio",
    "register_rps",
    "refresh_rps",
    "mem_idle_mb",
    "mem_load_mb",
)
#: The ceiling serves GET /auth/me and POST /auth/login: their throughput (and /auth/me's
#: latency), the login against the bcrypt bound and against bcrypt flat out, and its
#: memory at rest; this/ceiling is computed for all but the memory.
CEILING_FIGURES = (
    "me_rps",
    "me_p50_ms",
    "me_p99_ms",
    "login_rps",
    "login_pct_of_bound",
    "login_pct_of_flat_out",
    "mem_idle_mb",
)
CEILING_RATIOS = CEILING_FIGURES[:-1]


def _no_wrk(message: str) -> None:
    if os.environ.get("QAA_REQUIRE_WRK") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _run(arguments: list[str], env: dict[str, str] | None = None) -> tuple[Any, str]:
    """The project's Python with `arguments`, in the project: the process and its output."""
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    return result, f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-6000:]}"


def _smoke(out: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """`python -m bench.run --smoke OPTIONS` into `out`: the process and its output."""
    if shutil.which("wrk") is None and os.geteuid() != 0:
        _no_wrk("wrk is not installed: apt-get install wrk (as root the bench installs it)")
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in SERVICE_VARIABLES and not k.startswith("BENCH_")
    }
    python = ["--service-python", sys.executable, "--reference-python", sys.executable]
    result, output = _run(["-m", "bench.run", "--smoke", *options, "--out", str(out), *python], env)
    if result.returncode == EXIT_WRK_MISSING:
        _no_wrk(f"the bench could not find or install wrk:\n{output}")
    assert result.returncode == 0, output
    return result, output


def _assert_mfa_figures(mfa: dict[str, Any], output: str) -> None:
    """Every MFA figure measured on SQLite: latencies, req/s, ratios with their spread."""
    found = mfa["backends"]["sqlite"]
    challenge, me = found["challenge"], found["me"]
    for kind in ("challenge", "login"):
        assert challenge[kind]["samples"] >= 1, output
        assert 0 < challenge[kind]["p50_ms"] <= challenge[kind]["p99_ms"], output
        assert challenge[kind]["mean_ms"] > 0, output
    for kind in ("plain", "factor"):
        assert me[kind]["rps"]["median"] > 0, output
    for ratio in (challenge["ratio"], me["ratio"]):
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], output
    assert len(me["rounds"]) >= 3 and len(challenge["rounds"]) >= 3, output


def test_bench_totp_codes_are_the_services() -> None:
    """bench/mfa.py computes RFC 6238 itself (the bench venv has no pyotp): the same
    codes as the service, at any step, for any secret."""
    for _ in range(20):
        secret = totp.new_secret()
        for step in (0, 1, 59_000_000, totp.time_step(datetime.now(UTC)) + 1):
            assert totp_code(secret, step) == totp.code_at(secret, step)


def test_bench_smoke_mfa_alone(tmp_path: Path) -> None:
    """`make bench-mfa` in its smoke mode: this service only, mfa.json."""
    result, output = _smoke(tmp_path / "bench", "--mfa")
    data = json.loads((tmp_path / "bench" / "mfa.json").read_text())
    _assert_mfa_figures(data["mfa"], output)
    assert data["meta"]["plan"]["mfa_samples"] >= 3, output
    assert "POST /auth/mfa/challenge" in result.stdout
    assert "with/without a factor" in result.stdout


def _assert_spread(ratio: dict[str, Any], rounds: int) -> None:
    """A ratio of two sides computed round by round: its median, min, max and rounds."""
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], ratio
    assert len(ratio["rounds"]) == rounds, ratio


def _assert_rounds(group: dict[str, Any], sides: dict[str, tuple[str, ...]], rounds: int) -> None:
    """Every figure of each side measured (> 0) in every round and as the median of the
    rounds; this/Flask of every figure and this/ceiling of the /auth/me figures."""
    for side, keys in sides.items():
        found = group[side]
        assert len(found["rounds"]) == rounds, side
        for values in (*found["rounds"], found.get("figures", found)):
            missing = [key for key in keys if not values.get(key, 0) > 0]
            assert not missing, f"{side}: no figure for {missing}"
    for key in sides["service"]:
        _assert_spread(group["ratio"][key], rounds)
    for key in set(CEILING_RATIOS) & set(sides["ceiling"]):
        _assert_spread(group["ceiling_ratio"][key], rounds)


def test_bench_smoke_measures_every_figure_for_every_side(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result, output = _smoke(out, "--scaling-workers", "1")
    data = json.loads((out / "result.json").read_text())
    rounds = data["meta"]["plan"]["rounds"]
    assert rounds >= 2, output  # the smoke mode's; `make bench` does 3
    group = data["results"]["sqlite"]
    sides = {"service": FIGURES, "flask": FIGURES, "ceiling": CEILING_FIGURES}
    _assert_rounds(group, sides, rounds)
    assert set(group["ceiling_ratio"]) == set(CEILING_RATIOS), output
    assert set(group["ceiling"]["figures"]) == set(CEILING_FIGURES), output
    assert len(group["service"]["loads"]) == rounds, output
    firsts = [order[0] for order in group["order"]]
    assert len(set(firsts)) == min(rounds, 3), f"the order does not rotate: {group['order']}"
    scaled = data["scaling"]["workers"]["1"]  # interleaved too, with the ceiling's /auth/me
    login = ("login_rps", "login_pct_of_bound")
    me = ("me_rps", "me_p50_ms", "me_p99_ms")
    _assert_rounds(scaled, {"service": me + login, "flask": me + login, "ceiling": me}, rounds)
    assert data["bcrypt"]["bound_per_s"] > 0
    flat = group["flat_out"]  # bcrypt with no server, once per round, beside the logins
    assert len(group["flat_out_per_s"]) == rounds and min(group["flat_out_per_s"]) > 0, output
    assert 0 < flat["pct_of_bound"]["min"] <= flat["pct_of_bound"]["max"], output
    assert "bcrypt flat out (sqlite's rounds" in result.stdout, output
    assert data["meta"]["machine"]["cores"] >= 1
    assert data["meta"]["command"] and data["meta"]["date"]
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert "this/Flask" in result.stdout and "this/ceiling" in result.stdout
    _assert_mfa_figures(data["mfa"], output)
    assert "POST /auth/mfa/challenge" in result.stdout


def test_bcrypt_flat_out_counts_the_window_and_refuses_a_late_start(monkeypatch) -> None:
    """bench/hashing.py: hashes completed inside the window by each process; a process
    that starts after the window opened would undercount, so the figure is refused."""
    assert hashing.flat_out(4, 0.3, processes=2) > 0
    monkeypatch.setattr(hashing, "START_AFTER_S", -1.0)  # the window opened a second ago
    with pytest.raises(BenchError, match="started hashing 1.*s late"):
        hashing.flat_out(4, 0.3, processes=2)


def _run_bench_module(module: str, *options: str) -> str:
    """`python -m MODULE OPTIONS` of the project: its output (it must exit 0)."""
    result, output = _run(["-m", module, *options])
    assert result.returncode == 0, output
    return str(result.stdout)


def test_bench_loop_stall_runs_with_its_control() -> None:
    """`make bench-loop-stall`, tiny: both ways of reading, the control and the steal,
    then the pass that places the slow reads' time in the read's parts."""
    out = _run_bench_module(
        "bench.loop_stall",
        "--rounds",
        "1",
        "--seconds",
        "0.5",
        "--sessions",
        "200",
        "--writers",
        "1",
        "--trace-seconds",
        "0.5",
    )
    assert "median of the rounds" in out and "  thread " in out, out
    assert "controls (CPU only) over 1 ms" in out, out
    assert "the control, all rounds:" in out and "core-seconds" in out, out
    assert "where the time of the reads over 1 ms went" in out, out
    assert "SQLite, one step of its program" in out and "row conversion (Python)" in out, out


@pytest.mark.parametrize(
    ("serving", "hashing"),
    [((), None), (("--workers", "1", "--bcrypt-threads", "2"), "2 hashing threads in 1 workers")],
    ids=["default", "one-worker-two-threads"],
)
def test_bench_floor_splits_a_login_load_and_prints_every_floor(serving, hashing) -> None:
    """`make bench-floor` on SQLite, one round of a second: logins answered, the login
    load's every share of the cores' time, and the other floors, printed as medians; with
    `--workers` and `--bcrypt-threads`, the service served that way."""
    if shutil.which("wrk") is None and os.geteuid() != 0:
        _no_wrk("wrk is not installed: apt-get install wrk (as root the bench installs it)")
    out = _run_bench_module(
        "bench.floor", "--rounds", "1", "--seconds", "1", "--backends", "sqlite", *serving
    )
    assert hashing is None or hashing in out, out
    line = next(x for x in out.splitlines() if x.startswith("median: sqlite a login load"))
    shares = dict(
        (name.strip(), float(value.rstrip("%")))
        for name, value in (part.rsplit(" ", 1) for part in line.split("cores: ", 1)[1].split(", "))
    )
    assert set(shares) == {
        "of the bound",
        "of flat out",
        "hashes",
        "hashing rest",
        "workers rest",
        "outside",
        "steal",
        "idle",
    }, line
    assert shares["of the bound"] > 0 and shares["of flat out"] > 0 and shares["hashes"] > 0, line
    assert "median: sqlite CPU per GET /auth/me" in out, out
    assert "median: bcrypt flat out, a process per core" in out, out
