"""The workers' parent once they are serving: `run.py` forks the workers, then becomes
this small program (`os.execv`), so that the app it built, which the workers now hold,
stops counting in its memory (the pages both workers had copied were the parent's alone
to keep: about a sixth of the service's memory with two workers).

It imports nothing but the standard library. On SIGTERM, SIGINT, SIGHUP or SIGQUIT it
passes SIGTERM to every worker, and each one stops accepting at once and drains its
requests within `GRACEFUL_TIMEOUT` (hypercorn's own handling); when a worker exits
unasked (it failed), the others are stopped the same way. Whatever is still running
`graceful_timeout + 5` seconds later is killed. The exit code is the first failing
worker's (128 + the signal for one killed by a signal; 1 for one that ended unasked
with 0), else 0. Should this program die anyway (SIGKILL), the kernel sends each worker
SIGTERM (`run.py` sets their parent-death signal).

    python supervise.py GRACEFUL_SECONDS PID [PID ...]
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: Seconds beyond the graceful timeout before what is left is killed.
KILL_MARGIN = 5.0
#: What stops the service (SIGHUP and SIGQUIT too: this program reloads nothing, and
#: dying of one would leave the workers without a parent).
STOP = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
#: What the supervisor waits for. `run.py` blocks them before it forks (the workers
#: unblock them), so none is lost between the fork and this program's first wait.
WATCHED = {signal.SIGCHLD, *STOP}


def exit_code(status: int) -> int:
    """A wait status as a shell would report it: the code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def supervise(graceful_timeout: float, pids: list[int]) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would hide exits
    running = set(pids)
    codes: list[int] = []
    deadline: float | None = None  # set once the workers are told to stop
    requested = killed = False

    def stop() -> None:
        nonlocal deadline
        if deadline is None:
            deadline = time.monotonic() + graceful_timeout + KILL_MARGIN
            for pid in running:
                os.kill(pid, signal.SIGTERM)

    while running:
        while running:  # every worker that has exited
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # none of ours is left
                return next((code for code in codes if code), 0)
            if pid == 0:
                break
            if pid in running:
                running.discard(pid)
                code = exit_code(status)
                # a worker that ends unasked has failed, whatever its code said
                codes.append(code or (0 if requested else 1))
                stop()  # one worker ended: the service ends
        if not running:
            break
        if deadline is None or killed:
            received = signal.sigwaitinfo(WATCHED)
        elif (left := deadline - time.monotonic()) > 0:
            received = signal.sigtimedwait(WATCHED, left)
        else:  # the graceful timeout and the margin have passed
            for pid in running:
                os.kill(pid, signal.SIGKILL)
            killed = True
            continue
        if received is not None and received.si_signo != signal.SIGCHLD:
            requested = True
            stop()
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(supervise(float(sys.argv[1]), [int(pid) for pid in sys.argv[2:]]))
