"""What a run measures and how: the figures, the plan, and `Bench`, which starts the sides
of a backend at once (the service and the Flask reference each on a fresh database, the
ceiling on none), seeds them and drives wrk against one after the other, figure by
figure, in rounds whose order rotates (bench/rounds.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import hashing
from bench.common import ALL_SIDES, CEILING, SIDES, BenchError
from bench.harness import Postgres, Server, Sides, fresh_database, service_pool_size, start_server
from bench.load import Load, LoadResult, MemorySampler, Wrk, cpu_seconds, tree_memory_mb, wait_idle
from bench.rounds import CEILING_RATIOS, rotated, side_figures
from bench.seed import Seed, check_ceiling, check_contract, log_in, seed_users, write_lines

FIGURES: list[tuple[str, str, str, str]] = [
    ("me_rps", "GET /auth/me throughput", "req/s", "higher"),
    ("me_p50_ms", "GET /auth/me p50", "ms", "lower"),
    ("me_p99_ms", "GET /auth/me p99", "ms", "lower"),
    ("login_rps", "POST /auth/login throughput", "req/s", "higher"),
    ("login_pct_of_bound", "POST /auth/login, % of bcrypt bound", "%", "higher"),
    ("login_pct_of_flat_out", "POST /auth/login, % of bcrypt flat out", "%", "higher"),
    ("me_idle_p99_ms", "GET /auth/me p99, idle probe", "ms", "lower"),
    ("me_under_login_p99_ms", "GET /auth/me p99, logins saturating", "ms", "lower"),
    ("me_p99_under_login_ratio", "  /auth/me p99 under logins ÷ idle p99", "x", "lower"),
    ("register_rps", "POST /auth/register burst throughput", "req/s", "higher"),
    ("refresh_rps", "POST /auth/refresh throughput", "req/s", "higher"),
    ("mem_idle_mb", "memory (PSS), idle", "MiB", "lower"),
    ("mem_load_mb", "memory (PSS), peak under load", "MiB", "lower"),
]
FIGURE_KEYS = [key for key, *_ in FIGURES]
#: The ceiling's figures: those compared with it, and its memory at rest.
CEILING_FIGURES = (*CEILING_RATIOS, "mem_idle_mb")
SIDE_LABEL = {"service": "this (Quart)", "flask": "Flask", CEILING: "ceiling"}


@dataclass(frozen=True)
class Plan:
    """Everything that shapes a run (recorded in the result)."""

    smoke: bool
    duration: float
    workers: int
    backends: tuple[str, ...]
    bcrypt_rounds: int
    seed_users: int
    connections: int
    login_connections: int
    probe_connections: int
    probe_delay_ms: int
    wrk_threads: int
    scaling_workers: tuple[int, ...]
    scaling_backend: str
    growth_rows: tuple[int, ...]
    reference_worker_class: str
    rounds: int  # interleaved rounds of every figure (main, scaling, growth)
    sweep_duration: float  # seconds per figure of scaling and growth
    mfa_rounds: int  # bench/mfa.py: interleaved rounds of each figure
    mfa_samples: int  # bench/mfa.py: timed challenges (and as many timed logins)


@dataclass(frozen=True)
class Step:
    """One figure of a round: its name, what the log calls it, and the load of each side
    it applies to; with `background`, that side's load runs meanwhile (it starts first
    and ends last: the login storm)."""

    name: str
    what: str
    loads: dict[str, Load]
    background: dict[str, Load] | None = None
    first: Callable[[], None] | None = None  # run before the step's first side


# -- the run ----------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, sides: Sides, wrk: Wrk, pg: Postgres | None, out: Path) -> None:
        self.plan = plan
        self.sides = sides
        self.wrk = wrk
        self.pg = pg
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work = out / "work"
        self.work.mkdir(exist_ok=True)
        self.bound: dict[str, float] = {}

    def say(self, message: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)

    def load(self, script: str, **options: Any) -> Load:
        options["duration"] = options.get("duration") or self.plan.duration
        options.setdefault("threads", self.plan.wrk_threads)
        return Load(script=script, **options)

    def drain(self, server: Server) -> None:
        """Let the server finish what the previous figure left queued before measuring."""
        waited = wait_idle(server.process.pid)
        if waited > 2:
            self.say(f"  {server.side:7} (waited {waited:.1f}s for the server to go idle)")

    def run_load(self, server: Server, load: Load, what: str, *, drain: bool = True) -> LoadResult:
        if drain:
            self.drain(server)
        workers = server.worker_pids()
        before = cpu_seconds(workers)
        result = self.wrk.run(server.base_url, load)
        after = cpu_seconds(workers)
        used = sorted((round(after[pid] - before[pid], 2) for pid in workers), reverse=True)
        result = replace(result, worker_cpu_s=tuple(used))
        self._report_load(server.side, what, result)
        return result

    def _report_load(self, side: str, what: str, result: LoadResult) -> None:
        errors = {k: v for k, v in result.errors.items() if v}
        extra = f" errors={errors}" if errors else ""
        if result.failed or result.starved:
            extra += f" failed={result.failed} starved={result.starved}"
        cpu = result.worker_cpu_s
        if len(cpu) > 1 and cpu[0] > 1 and cpu[-1] < cpu[0] / 4:
            extra += f" uneven: workers used {'/'.join(f'{c:.1f}' for c in cpu)} CPU-s"
        self.say(
            f"  {side:7} {what:28} {result.rps:9.1f} req/s  p50 {result.latency_ms['p50']:8.2f} ms"
            f"  p99 {result.latency_ms['p99']:8.2f} ms{extra}"
        )

    @property
    def warmup(self) -> float:
        return 1.0 if self.plan.smoke else min(3.0, self.plan.duration)

    # -- one side of one backend ----------------------------------------------------

    def seed(self, server: Server, count: int, tag: str) -> tuple[Seed, dict[str, Path]]:
        started = time.monotonic()
        seed = seed_users(
            server.base_url,
            count,
            prefix=f"{tag}-{uuid.uuid4().hex[:8]}",
            concurrency=min(16, 4 * server.workers),
        )
        self.say(f"  {server.side:7} seeded {count} users in {time.monotonic() - started:.1f}s")
        folder = self.work / f"{tag}-{server.side}-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        files = {
            "access": write_lines(folder / "access.txt", seed.access_tokens),
            "refresh": write_lines(folder / "refresh.txt", seed.refresh_tokens),
            "emails": write_lines(folder / "emails.txt", seed.emails),
        }
        return seed, files

    # -- the sides of a backend, all at once --------------------------------------------

    def server(
        self, side: str, url: str, workers: int, tag: str, *, secret: str | None = None
    ) -> Any:
        log = self.logs / f"{tag}-{side}-w{workers}.log"
        pool = service_pool_size(self.plan.connections, workers)
        return start_server(self.sides, side, url, workers, log, pool_size=pool, secret=secret)

    def start_sides(
        self, stack: ExitStack, backend: str, workers: int, tag: str, sides: Sequence[str]
    ) -> dict[str, Server]:
        """Start `sides` (stopped, and their databases dropped, when `stack` closes): the
        service and Flask each on a fresh database, the ceiling with the service's
        JWT_SECRET_KEY, so that the service's tokens drive it."""
        servers: dict[str, Server] = {}
        for side in sides:
            if side == CEILING:
                secret = servers["service"].jwt_secret
                server = self.server(side, "", workers, tag, secret=secret)
            else:
                url = stack.enter_context(fresh_database(backend, side, self.work, self.pg))
                server = self.server(side, url, workers, tag)
            servers[side] = stack.enter_context(server)
        return servers

    def seed_sides(
        self, servers: dict[str, Server], count: int, tag: str, *, refresh_sets: int = 1
    ) -> dict[str, dict[str, Any]]:
        """Seed the service and Flask through the API and check their contract (the
        ceiling: that it takes the service's tokens); each side's files. `refresh`
        holds one file of fresh refresh tokens per round (each is good once): the
        registrations' sessions, then as many new logins as needed, not timed."""
        files: dict[str, dict[str, Any]] = {}
        for side in SIDES:
            server = servers[side]
            seed, files[side] = self.seed(server, count, tag)
            check_contract(server.base_url, seed)
            if side == "service" and CEILING in servers:
                check_ceiling(servers[CEILING].base_url, seed)
                files[CEILING] = files[side]
            sets = [files[side]["refresh"]]
            started = time.monotonic()
            for number in range(2, refresh_sets + 1):
                tokens = log_in(
                    server.base_url, seed.emails, concurrency=min(16, 4 * server.workers)
                )
                sets.append(write_lines(sets[0].with_name(f"refresh-{number}.txt"), tokens))
            if refresh_sets > 1:
                self.say(
                    f"  {side:7} {refresh_sets - 1} more logins per user (refresh tokens of the "
                    f"later rounds) in {time.monotonic() - started:.1f}s"
                )
            files[side]["refresh_rounds"] = sets
        return files

    def me_load(self, files: dict[str, Any], duration: float | None = None) -> Load:
        return self.load(
            "me", connections=self.plan.connections, lines=files["access"], duration=duration
        )

    def warm_up(self, servers: dict[str, Server], files: dict[str, dict[str, Any]]) -> None:
        for side, server in servers.items():
            self.wrk.run(server.base_url, self.me_load(files[side], self.warmup))

    def in_turn(
        self,
        number: int,
        servers: dict[str, Server],
        steps: list[Step],
        samplers: dict[str, MemorySampler] | None = None,
    ) -> dict[str, dict[str, LoadResult]]:
        """Round `number`: each step on every side it applies to, one side after the other
        in the round's order (rotated); each side's wrk results by step name. A side's
        memory sampler, if any, runs while that side is measured."""
        order = rotated(list(servers), number)
        self.say(f"  round {number}: {', '.join(order)}")
        found: dict[str, dict[str, LoadResult]] = {side: {} for side in order}
        for step in steps:
            if step.first:
                step.first()
            for side in (side for side in order if side in step.loads):
                server, load, what = servers[side], step.loads[side], f"{step.what} #{number}"
                try:
                    with (samplers or {}).get(side) or nullcontext():
                        if step.background is None:
                            found[side][step.name] = self.run_load(server, load, what)
                        else:
                            behind = step.background[side]
                            found[side].update(self.storm(server, load, behind, what, step.name))
                except BenchError as error:  # say whether the server is still there
                    raise BenchError(f"{side}, {what}: {error}{server.gone()}") from None
        return found

    # -- the main figures ---------------------------------------------------------------

    def main_figures(self) -> dict[str, dict[str, Any]]:
        plan = self.plan
        results: dict[str, dict[str, Any]] = {}
        for backend in plan.backends:
            self.say(f"{backend}: {plan.workers} worker(s) each, {plan.rounds} rounds")
            with ExitStack() as stack:
                servers = self.start_sides(
                    stack, backend, plan.workers, f"{backend}-main", ALL_SIDES
                )
                files = self.seed_sides(
                    servers, plan.seed_users, f"seed-{backend}", refresh_sets=plan.rounds
                )
                time.sleep(1.0)
                self.warm_up(servers, files)
                found: dict[str, Any] = {
                    s: {"rounds": [], "rss_mb": [], "loads": []} for s in servers
                }
                found["flat_out_per_s"] = []  # report.conclude_results: login ÷ this
                for number in range(1, plan.rounds + 1):
                    self.main_round(number, servers, files, found)
                for side, server in servers.items():
                    found[side]["processes"] = len(server.worker_pids()) + 1
            found["order"] = [rotated(list(servers), n) for n in range(1, plan.rounds + 1)]
            results[backend] = found
        return results

    def main_round(
        self,
        number: int,
        servers: dict[str, Server],
        files: dict[str, dict[str, Any]],
        found: dict[str, Any],
    ) -> None:
        """One round of every figure; each side's figures, memory and loads appended to
        `found`. Memory at rest first (each side drained), then the loads."""
        plan = self.plan
        idle = {}
        for side, server in servers.items():
            self.drain(server)
            idle[side] = tree_memory_mb(server.process.pid)
        me = {side: self.me_load(files[side]) for side in servers}
        probes = {  # the latency probe (the ceiling has the /auth/me and login figures)
            side: replace(
                me[side],
                connections=plan.probe_connections,
                delay_ms=plan.probe_delay_ms,
                threads=1,
            )
            for side in SIDES
        }
        logins = {
            side: self.load(
                "login", connections=plan.login_connections, lines=files[side]["emails"]
            )
            for side in servers
        }

        registers = {
            side: self.load(
                "register",
                connections=plan.login_connections,
                run_id=f"reg-{uuid.uuid4().hex[:10]}",
            )
            for side in SIDES
        }
        refreshes = {
            side: self.load(
                "refresh",
                connections=plan.connections,
                lines=files[side]["refresh_rounds"][number - 1],
            )
            for side in SIDES
        }
        steps = [
            Step("me", "GET /auth/me", me),
            Step("me_idle_probe", "GET /auth/me probe, idle", probes),
            Step("login", "POST /auth/login", logins, first=lambda: self.flat_out(found)),
            Step("me_under_login_probe", "GET /auth/me probe, logins", probes, logins),
            Step("register", "POST /auth/register", registers),
            Step("refresh", "POST /auth/refresh", refreshes),
        ]
        samplers = {side: MemorySampler(servers[side].process.pid) for side in SIDES}
        loads = self.in_turn(number, servers, steps, samplers)
        for side, measured in loads.items():
            rss, pss = idle[side]
            sampler = samplers.get(side)
            figures = side_figures(measured, pss, sampler.peak_pss if sampler else 0.0)
            keep = CEILING_FIGURES if side == CEILING else FIGURE_KEYS
            found[side]["rounds"].append({key: figures[key] for key in keep})
            load_rss = {"load": round(sampler.peak_rss, 1)} if sampler else {}
            found[side]["rss_mb"].append({"idle": round(rss, 1), **load_rss})
            found[side]["loads"].append(
                {name: result.as_dict() for name, result in measured.items()}
            )

    def flat_out(self, found: dict[str, Any]) -> None:
        """bcrypt flat out with no server, in a window as long as the login figure's."""
        rate = hashing.flat_out(self.plan.bcrypt_rounds, self.plan.duration)
        self.say(f"  bcrypt flat out, a process per core, no server: {rate:.2f} hashes/s")
        found["flat_out_per_s"].append(round(rate, 3))

    def storm(
        self, server: Server, load: Load, logins: Load, what: str, name: str
    ) -> dict[str, LoadResult]:
        """Figure 3: `load` (the paced probe) while logins saturate the CPU: they start
        1.5 s before it and end after it."""
        background = replace(logins, duration=load.duration + 3)
        self.drain(server)
        login_process = self.wrk.start(server.base_url, background)
        try:
            time.sleep(1.5)
            measured = self.run_load(server, load, what, drain=False)
        finally:
            behind = self.wrk.finish(login_process, background)
        self._report_load(server.side, "POST /auth/login (background)", behind)
        return {name: measured, "login_background": behind}

    @property
    def postgres(self) -> Postgres:
        if self.pg is None:
            raise BenchError("this figure needs PostgreSQL (--backends ...,postgresql)")
        return self.pg
