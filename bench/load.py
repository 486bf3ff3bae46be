"""Load and what it costs: wrk runs (`Load` -> `LoadResult`), and the CPU and memory of a
server's process tree while it serves them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    APT_TIMEOUT,
    PASSWORD,
    WRK_DIR,
    WRK_GRACE,
    WRK_REQUEST_TIMEOUT,
    BenchError,
    WrkMissing,
    run_checked,
)

# -- wrk ------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of wrk; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise WrkMissing(
            "wrk is not installed: install Debian's package as root (apt-get install wrk); "
            "the benchmark installs it itself when run as root"
        )
    print("bench: installing wrk from Debian's packages (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_checked(["apt-get", "update", "-qq"], timeout=APT_TIMEOUT, env=env)
    run_checked(["apt-get", "install", "-y", "-qq", "wrk"], timeout=APT_TIMEOUT, env=env)
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("apt-get install wrk succeeded but wrk is not on PATH")
    return found


@dataclass(frozen=True)
class Load:
    """One wrk run: a scenario script against a server."""

    script: str  # me, login, register or refresh (bench/wrk/<script>.lua)
    duration: float
    connections: int
    threads: int = 1
    lines: Path | None = None  # tokens or emails, one per line, split across wrk threads
    delay_ms: int = 0  # pause between a connection's requests (latency probe)
    run_id: str = ""  # register: unique email prefix


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    ok: int  # successful requests of the scenario's kind
    errors: dict[str, int]
    latency_ms: dict[str, float]
    starved: int = 0
    failed: int = 0
    #: CPU seconds each worker process used during the load, busiest first (a keep-alive
    #: connection stays with the worker that accepted it, so the split can be uneven).
    worker_cpu_s: tuple[float, ...] = ()

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 2),
            "errors": self.errors,
            "failed": self.failed,
            "starved": self.starved,
            "latency_ms": self.latency_ms,
            "worker_cpu_s": list(self.worker_cpu_s),
        }


class Wrk:
    """Runs wrk with bench/wrk/common.lua in front of a scenario script."""

    def __init__(self, wrk: str, work_dir: Path) -> None:
        self.wrk = wrk
        self.scripts = work_dir / "wrk"
        self.scripts.mkdir(parents=True, exist_ok=True)
        common = (WRK_DIR / "common.lua").read_text()
        for scenario in ("me", "login", "register", "refresh"):
            body = (WRK_DIR / f"{scenario}.lua").read_text()
            (self.scripts / f"{scenario}.lua").write_text(common + "\n" + body)

    def start(self, base_url: str, load: Load) -> subprocess.Popen[str]:
        threads = max(1, min(load.threads, load.connections))
        env = {
            **os.environ,
            "BENCH_THREADS": str(threads),
            "BENCH_PASSWORD": PASSWORD,
            "BENCH_DELAY_MS": str(load.delay_ms),
            "BENCH_RUN": load.run_id or uuid.uuid4().hex[:12],
            "BENCH_LINES": str(load.lines or ""),
        }
        args = [
            self.wrk,
            f"-t{threads}",
            f"-c{load.connections}",
            f"-d{max(1, round(load.duration))}s",
            f"--timeout={WRK_REQUEST_TIMEOUT}",
            "-s",
            str(self.scripts / f"{load.script}.lua"),
            base_url,
        ]
        return subprocess.Popen(  # noqa: S603
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(self, process: subprocess.Popen[str], load: Load) -> LoadResult:
        try:
            output, _ = process.communicate(timeout=load.duration + WRK_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise BenchError(f"wrk {load.script} did not finish in time") from None
        except BaseException:  # interrupted: never leave a wrk behind
            process.kill()
            process.wait()
            raise
        match = re.search(r"^BENCH_RESULT (\{.*\})$", output, re.MULTILINE)
        if process.returncode != 0 or match is None:
            raise BenchError(f"wrk {load.script} failed ({process.returncode}):\n{output}")
        raw = json.loads(match.group(1))
        errors = raw["errors"]
        seconds = raw["duration_us"] / 1e6
        if load.script == "refresh":
            ok = raw["ok"]  # counted in response(): a 200 carrying a rotated refresh token
        else:
            ok = raw["requests"] - errors["status"]
        latency = {key: round(value / 1000, 3) for key, value in raw["latency_us"].items()}
        return LoadResult(
            requests=raw["requests"],
            seconds=seconds,
            ok=ok,
            errors=errors,
            latency_ms=latency,
            starved=raw["starved"],
            failed=raw["failed"],
        )

    def run(self, base_url: str, load: Load) -> LoadResult:
        return self.finish(self.start(base_url, load), load)


# -- what the servers use --------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """Summed RSS and PSS (MiB) of a process tree."""
    rss = pss = 0
    for process in tree(pid):
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process tree."""
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, all cores: busy is every
    state but idle and I/O wait; steal, what a hypervisor took (0 where there is none)."""
    times = psutil.cpu_times()
    steal = getattr(times, "steal", 0.0)
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - _guests(times), steal


def _guests(times: Any) -> float:
    """Guest time, which Linux counts inside user and nice already."""
    return getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)


def cpu_times(pids: list[int]) -> dict[int, tuple[float, float]]:
    """CPU time used so far by each of `pids`: (user, system); (0, 0) for a process gone."""
    result = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            result[pid] = (times.user, times.system)
        except psutil.NoSuchProcess:
            result[pid] = (0.0, 0.0)
    return result


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU time (user + system) used so far by each of `pids` (0 for a process gone)."""
    return {pid: user + system for pid, (user, system) in cpu_times(pids).items()}


def wait_idle(pid: int, *, cores: float = 0.1, window: float = 0.5, timeout: float = 60.0) -> float:
    """Wait until a server's processes use less than `cores` of CPU over `window` seconds
    (requests left over from the previous figure, e.g. bcrypt hashes whose clients are
    gone, are finished); the seconds waited, at most `timeout`."""
    started = time.monotonic()
    last = tree_cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = tree_cpu_seconds(pid)
        if (now - last) / window < cores:
            break
        last = now
    return time.monotonic() - started


class MemorySampler:
    """Samples the summed RSS of a server's processes in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = self.peak_pss = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = tree_memory_mb(self.pid)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.interval)
