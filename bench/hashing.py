"""bcrypt on this machine with no server: the bound every login figure is a percentage of,
and what the machine can hash flat out, counted the way wrk counts a load.

The bound is the cores divided by the time of one hash alone. No server reaches it: two
hashes at once each run slower than one alone does (the cores share caches, and a
virtual machine's cores may share a physical core), and a window of a few seconds loses
the hashes still running when it closes. `flat_out` measures what is left: one process
per core, each hashing in its main thread with nothing else to do, counting the hashes
that complete inside the window, as wrk counts the logins that complete inside its own.
A login figure divided by it says how much of what the machine can hash the server
turns into logins.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import statistics
import time
from typing import Any

import bcrypt

from bench.common import PASSWORD, BenchError

#: How long after the last process is ready the window opens.
START_AFTER_S = 0.1
#: A process that starts hashing later than this after the window opened spoils the figure.
LATE_S = 0.1
#: How long the processes may take to start (spawned interpreters importing bcrypt).
READY_TIMEOUT_S = 60.0


def time_one_hash(cost: int) -> float:
    """Seconds per bcrypt check at `cost` on one core, nothing else running (median)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost))
    samples = []
    for _ in range(5 if cost >= 10 else 50):
        started = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def bound(cost: int, *earlier: float) -> dict[str, Any]:
    """The bcrypt bound: cores / seconds per hash. Timed now and, with `earlier` timings,
    at other moments of a run; the fastest counts (the machine's capacity, not a busy
    moment)."""
    timings = [*earlier, time_one_hash(cost)]
    seconds = min(timings)
    cores = os.cpu_count() or 1
    return {
        "rounds": cost,
        "seconds_per_hash": round(seconds, 6),
        "timings": [round(t, 6) for t in timings],
        "cores": cores,
        "bound_per_s": round(cores / seconds, 3),
    }


def flat_out(cost: int, seconds: float, processes: int | None = None) -> float:
    """Hashes per second that one process per core (or `processes`) completes inside a
    window of `seconds`, all starting together; the hashes running when the window closes
    are not counted."""
    count = processes or os.cpu_count() or 1
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost))
    context = multiprocessing.get_context("spawn")  # no copy of the harness's threads
    ready, done, go = context.Queue(), context.Queue(), context.Event()
    opens = context.Value("d", 0.0)  # CLOCK_MONOTONIC: the same in every process
    children = [
        context.Process(target=_hash_in_window, args=(hashed, seconds, ready, go, opens, done))
        for _ in range(count)
    ]
    for child in children:
        child.start()
    try:
        for _ in children:
            ready.get(timeout=READY_TIMEOUT_S)
        opens.value = time.monotonic() + START_AFTER_S
        go.set()
        found = [done.get(timeout=START_AFTER_S + seconds + 60) for _ in children]
    except queue.Empty:
        codes = [child.exitcode for child in children]
        raise BenchError(f"bcrypt flat out: a process did not answer (exit {codes})") from None
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
    late = max(lateness for _, lateness in found)
    if late > LATE_S:
        raise BenchError(f"bcrypt flat out: a process started hashing {late:.2f}s late")
    return sum(hashes for hashes, _ in found) / seconds


def _hash_in_window(
    hashed: bytes, seconds: float, ready: Any, go: Any, opens: Any, done: Any
) -> None:
    """One process of `flat_out`: say it is ready, wait for the window, hash until it
    closes, and report (the hashes completed inside it, how late this process started)."""
    password = PASSWORD.encode()
    ready.put(True)
    go.wait()
    time.sleep(max(0.0, opens.value - time.monotonic()))
    started = time.monotonic()
    closes = opens.value + seconds
    hashes = 0
    while True:
        bcrypt.checkpw(password, hashed)
        if time.monotonic() > closes:
            break
        hashes += 1
    done.put((hashes, max(0.0, started - opens.value)))
