"""How long the guard's SQLite read holds the event loop, while other processes write.

    make bench-loop-stall                      # 5 rounds of 10 s, 2 writer processes
    python -m bench.loop_stall --rounds 3 --seconds 5 --writers 1

On SQLite the token check reads on the event loop (`statements.SqliteStatements`,
stdlib `sqlite3`, busy timeout 0, falling back to aiosqlite's thread when busy). This
measures that claim under the service's own write load: a database made by the
service's models with `--sessions` sessions, `--writers` processes each doing what
logins, refreshes and logouts do (insert a session, bump a generation, revoke one, each
its own transaction, `--write-rate` rounds a second, SQLite's automatic checkpoints
included), and on the loop the
service's own `LIVE_SESSION` read of random sessions, back to back, for `--seconds`.

Each round measures both ways of reading, interleaved (loop, thread, loop, thread …):
on the loop, every call's wall time is the time the loop was held; through the thread,
the time a request waits for its row. Python's garbage collector is off while a round
reads (a collection can pause any code on the loop; the service's workers freeze what
they inherit, so theirs are short): what is timed is the read. It prints, per round
and as the median of the rounds: reads per second, p50 / p99 / p99.9 / max in
microseconds, the calls that held the loop over 1 ms (and whether the process slept or
was preempted in them), and the reads that found the database busy and went to the
thread.

On the loop each read is followed by a **control**: pure Python work as long as a typical
read (`sum(range(n))`, about 60 µs, no I/O, no SQLite, no allocation), timed the same way.
A pause that the control suffers as often as the read is the machine's (the scheduler,
other processes, the hypervisor: each round's steal time is printed), not the read's; of
the reads that used over 1 ms of CPU, those that took page faults (the heap growing) are
counted.

Then, with the writers still on, a pass of `--trace-seconds` places the time of each read
over 1 ms: the read in the parts `SqliteStatements.one` takes on the loop (the
parameters, SQLite's statement, the row's conversion), with a progress handler called at
every step of SQLite's program, so that a pause inside SQLite falls in one step of it, or
before its first (preparing, beginning the read: the WAL index) or after its last. It
counts the part that held most of each slow read's time, and the slow reads with no page
fault and no context switch. A pause that falls in the Python parts as readily as in
SQLite's, and inside one step of a lookup by primary key with neither a fault nor a
switch, is the machine taking the CPU away, not SQLite's work. A benchmark, never a
test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import random
import resource
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.pool import NullPool

from bench.load import machine_cpu
from quart_auth_api.db import Base, create_engine, open_database
from quart_auth_api.models import utcnow
from quart_auth_api.services.sessions import LIVE_SESSION
from settings import Settings

STALL_US = 1000.0
#: A read's typical time on the loop: the control is pure Python work this long.
CONTROL_US = 60.0


def control_size() -> int:
    """n for which `sum(range(n))` takes about CONTROL_US here: the control, CPU alone,
    no I/O, no SQLite."""
    n = 64
    while True:
        started = time.perf_counter()
        for _ in range(20):
            sum(range(n))
        if (time.perf_counter() - started) / 20 * 1e6 >= CONTROL_US:
            return n
        n = n * 5 // 4 + 1


def make_database(path: Path, sessions: int) -> list[tuple[str, str]]:
    """The service's schema with one user per 4 sessions; (session id, user public id)."""
    settings = Settings.for_testing(database_url=f"sqlite:///{path}")

    async def create() -> None:
        engine = create_engine(settings, poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")
    later = (utcnow() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S.%f")
    pairs = []
    with sqlite3.connect(path) as db:
        for number in range(sessions // 4 or 1):
            public = uuid.uuid4()
            db.execute(
                "INSERT INTO users (id, public_id, email, name, password_hash, is_active,"
                " created_at, updated_at) VALUES (?, ?, ?, 'Ada', 'x', 1, ?, ?)",
                (number + 1, public.hex, f"user{number}@example.com", now, now),
            )
            for _ in range(4):
                sid = uuid.uuid4()
                db.execute(
                    "INSERT INTO auth_sessions (id, user_id, generation, created_at,"
                    " last_used_at, expires_at, amr) VALUES (?, ?, 0, ?, ?, ?, 'pwd')",
                    (sid.hex, number + 1, now, now, later),
                )
                pairs.append((str(sid), str(public)))
    return pairs


def writer(path: str, stop: Any, users: int, seed: int, rate: float) -> None:
    """What the other workers' logins, refreshes and logouts write, until `stop` is set:
    `rate` rounds a second (each three transactions), or as fast as it can with 0."""
    rng = random.Random(seed)  # noqa: S311 (which rows to write, not a secret)
    db = sqlite3.connect(path, timeout=15, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    mine: list[str] = []
    pace = 1 / rate if rate > 0 else 0.0
    next_round = time.monotonic()
    while not stop.is_set():
        if pace:
            next_round += pace
            time.sleep(max(0.0, next_round - time.monotonic()))
        now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")
        sid = uuid.uuid4().hex
        db.execute(
            "INSERT INTO auth_sessions (id, user_id, generation, created_at, last_used_at,"
            " expires_at, amr) VALUES (?, ?, 0, ?, ?, ?, 'pwd')",
            (sid, rng.randint(1, users), now, now, now),
        )
        mine.append(sid)
        db.execute(
            "UPDATE auth_sessions SET generation = generation + 1, rotated_at = ? WHERE id = ?",
            (now, rng.choice(mine)),
        )
        if len(mine) > 50:
            db.execute(
                "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = 'logout' WHERE id = ?",
                (now, mine.pop(0)),
            )
    db.close()


def read_values(pair: tuple[str, str]) -> dict[str, Any]:
    """The guard's read of one (session id, user public id): `LIVE_SESSION`'s values."""
    sid, sub = pair
    return {"session_id": uuid.UUID(sid), "user_public_id": uuid.UUID(sub), "now": utcnow()}


async def measure(
    path: Path, pairs: list[tuple[str, str]], seconds: float, on_loop: bool
) -> dict[str, Any]:
    settings = Settings.for_testing(database_url=f"sqlite:///{path}")
    database = open_database(settings)
    statements = database.statements
    if not on_loop:
        statements.path = None  # type: ignore[union-attr]  # every read through the thread
    rng = random.Random(1)  # noqa: S311 (which sessions to read)
    samples: list[float] = []
    blocked = preempted = faults = 0  # calls over 1 ms that slept / that the scheduler paused
    worst_cpu = 0.0  # the most CPU time one of those calls used
    on_cpu = on_cpu_faulted = control_over = control_on_cpu = 0  # over 1 ms of CPU; control
    size = control_size()
    gc.collect()
    gc.disable()  # a collection can pause any code: measured here is the read alone
    stolen = machine_cpu()[1]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        values = read_values(rng.choice(pairs))
        before = resource.getrusage(resource.RUSAGE_THREAD)
        cpu_started = time.thread_time()
        started = time.perf_counter()
        await statements.one(LIVE_SESSION, values)
        held = (time.perf_counter() - started) * 1e6
        cpu = (time.thread_time() - cpu_started) * 1e6
        samples.append(held)
        if held > STALL_US and on_loop:
            after = resource.getrusage(resource.RUSAGE_THREAD)
            if after.ru_nvcsw > before.ru_nvcsw:  # gave the CPU up: a sleep or a disk read
                blocked += 1
            elif after.ru_nivcsw > before.ru_nivcsw:  # taken off the CPU by the scheduler
                preempted += 1
            worst_cpu = max(worst_cpu, cpu)
            faults = max(faults, after.ru_minflt - before.ru_minflt)
            on_cpu += cpu > STALL_US
            on_cpu_faulted += cpu > STALL_US and after.ru_minflt > before.ru_minflt
        if on_loop:  # the control, right after: CPU work of a read's length, nothing else
            cpu_started, started = time.thread_time(), time.perf_counter()
            sum(range(size))
            if (time.perf_counter() - started) * 1e6 > STALL_US:
                control_over += 1
                control_on_cpu += (time.thread_time() - cpu_started) * 1e6 > STALL_US
    stolen = machine_cpu()[1] - stolen
    gc.enable()
    busy = getattr(statements, "busy_reads", 0)
    await database.close()
    samples.sort()

    def at(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    return {
        "reads_per_s": len(samples) / seconds,
        "p50": at(0.5),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": samples[-1],
        "over_1ms": sum(1 for s in samples if s > STALL_US),
        "busy": busy,
        "blocked": blocked,
        "preempted": preempted,
        "worst_cpu": worst_cpu,
        "faults": faults,
        "reads": len(samples),
        "on_cpu": on_cpu,
        "on_cpu_faulted": on_cpu_faulted,
        "control_over": control_over,
        "control_on_cpu": control_on_cpu,
        "steal_s": stolen,
    }


#: The parts of one read on the loop, in order (`SqliteStatements.one` on the loop).
PARTS = (
    "parameters (Python)",
    "SQLite before its first step (prepare, begin the read)",
    "SQLite, one step of its program",
    "SQLite, after its last step",
    "row conversion (Python)",
)


async def trace(path: Path, pairs: list[tuple[str, str]], seconds: float) -> dict[str, Any]:
    """Where the time of each read over 1 ms went: the read in the parts
    `SqliteStatements.one` takes on the loop, with a progress handler called at every
    step of SQLite's program (so a pause inside SQLite is placed in one step, or before
    or after them), and the read's page faults and context switches. The part that held
    most of a slow read's time is counted."""
    settings = Settings.for_testing(database_url=f"sqlite:///{path}")
    database = open_database(settings)
    statements: Any = database.statements
    compiled = statements.compiled(LIVE_SESSION)
    steps: list[float] = []
    counts = dict.fromkeys(PARTS, 0)
    quiet = reads = busy = 0  # slow reads with no fault and no switch; all reads; busy ones
    rng = random.Random(2)  # noqa: S311 (which sessions to read)
    opening = compiled.parameters(read_values(pairs[0]))
    statements._read(compiled.sql, opening)  # noqa: SLF001 (opens the reader)
    reader = statements._reader  # noqa: SLF001
    reader.set_progress_handler(lambda: steps.append(time.perf_counter()), 1)
    gc.collect()
    gc.disable()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        values = read_values(rng.choice(pairs))
        steps.clear()
        before = resource.getrusage(resource.RUSAGE_THREAD)
        started = time.perf_counter()
        parameters = compiled.parameters(values)
        sent = time.perf_counter()
        try:
            rows = statements._read(compiled.sql, parameters)  # noqa: SLF001
        except sqlite3.Error:  # busy or locked: the service reads in the thread then
            busy += 1
            continue
        read = time.perf_counter()
        compiled.one(rows)
        ended = time.perf_counter()
        reads += 1
        if (ended - started) * 1e6 <= STALL_US or not steps:
            continue
        gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)] or [0.0]
        times = [sent - started, steps[0] - sent, max(gaps), read - steps[-1], ended - read]
        counts[PARTS[times.index(max(times))]] += 1
        after = resource.getrusage(resource.RUSAGE_THREAD)
        counters = ("ru_minflt", "ru_nvcsw", "ru_nivcsw")  # page faults, both switches
        quiet += all(getattr(after, c) == getattr(before, c) for c in counters)
    gc.enable()
    await database.close()
    slow = sum(counts.values())
    return {"reads": reads, "slow": slow, "quiet": quiet, "busy": busy, "parts": counts}


def line(label: str, r: dict[str, Any]) -> str:
    return (
        f"  {label:8} {r['reads_per_s']:9,.0f} reads/s  p50 {r['p50']:7.1f}  p99 {r['p99']:7.1f}"
        f"  p99.9 {r['p999']:7.1f}  max {r['max']:8.1f} µs  over 1 ms {r['over_1ms']:>4}"
        f" of {r['reads']:,}"
        + (
            f" (slept {r['blocked']}, preempted {r['preempted']}, most CPU"
            f" {r['worst_cpu']:.0f} µs, faults {r['faults']}); busy→thread {r['busy']}\n"
            f"{'':11}of as many {CONTROL_US:.0f} µs controls (CPU only) over 1 ms"
            f" {r['control_over']:>4}; over 1 ms of CPU: reads {r['on_cpu']} (with page"
            f" faults {r['on_cpu_faulted']}), controls"
            f" {r['control_on_cpu']}; the hypervisor took {r['steal_s']:.2f} s of CPU"
            if label == "loop"
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loop_stall", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument(
        "--write-rate", type=float, default=300.0, help="rounds/s per writer, 0: flat out (300)"
    )
    parser.add_argument(
        "--trace-seconds",
        type=float,
        default=10.0,
        help="then a pass placing each slow read's time in its parts, 0: none (10)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qaa-loop-stall-") as folder:
        path = Path(folder) / "bench.db"
        pairs = make_database(path, args.sessions)
        print(
            f"loop stall: {args.sessions:,} sessions, {args.writers} writer process(es) at "
            f"{args.write_rate:g} rounds/s each (3 transactions a round; 0: flat out), "
            f"{args.rounds} rounds of {args.seconds:g} s per way, interleaved; µs per read"
        )
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        writers = [
            context.Process(
                target=writer, args=(str(path), stop, len(pairs) // 4, n, args.write_rate)
            )
            for n in range(args.writers)
        ]
        for process in writers:
            process.start()
        results: dict[str, list[dict[str, Any]]] = {"loop": [], "thread": []}
        try:
            time.sleep(1.0)
            for round_number in range(1, args.rounds + 1):
                print(f"round {round_number}")
                for way in ("loop", "thread") if round_number % 2 else ("thread", "loop"):
                    result = asyncio.run(measure(path, pairs, args.seconds, way == "loop"))
                    results[way].append(result)
                    print(line(way, result), flush=True)
            traced = None
            if args.trace_seconds > 0:
                traced = asyncio.run(trace(path, pairs, args.trace_seconds))
        finally:
            stop.set()
            for process in writers:
                process.join(30)
                if process.is_alive():
                    process.kill()
        print("median of the rounds")
        for way, rounds in results.items():
            median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
            print(line(way, median))
        loop = results["loop"]
        print(
            f"on the loop, all rounds: {sum(r['reads'] for r in loop):,} reads, worst "
            f"{max(r['max'] for r in loop):,.1f} µs; over 1 ms: "
            f"{sum(r['over_1ms'] for r in loop)}, of which the read slept or waited in "
            f"{sum(r['blocked'] for r in loop)} and the scheduler paused the process in "
            f"{sum(r['preempted'] for r in loop)}; busy reads sent to the thread: "
            f"{sum(r['busy'] for r in loop)}\n"
            f"the control, all rounds: {sum(r['control_over'] for r in loop)} of "
            f"{sum(r['reads'] for r in loop):,} over 1 ms (of them over 1 ms of CPU: "
            f"{sum(r['control_on_cpu'] for r in loop)}; reads: "
            f"{sum(r['on_cpu'] for r in loop)}, with page faults "
            f"{sum(r['on_cpu_faulted'] for r in loop)}); steal in the loop rounds "
            f"{sum(r['steal_s'] for r in loop):.2f} s of "
            f"{len(loop) * args.seconds * (os.cpu_count() or 1):.0f} core-seconds"
        )

        if traced is not None:
            print(
                f"where the time of the reads over 1 ms went ({args.trace_seconds:g} s on the "
                f"loop, every step of SQLite's program timed): {traced['slow']} of "
                f"{traced['reads']:,} reads over 1 ms, {traced['quiet']} of them with no page "
                f"fault and no context switch ({traced['busy']} found the database busy); most "
                "of the time in:\n"
                + "\n".join(f"  {n:>5}  {part}" for part, n in traced["parts"].items())
            )


if __name__ == "__main__":
    main()
