"""Interleaved rounds: the order of the sides in each round, and what the rounds add up to
(each side's median, and the ratio of two sides computed round by round)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.common import ALL_SIDES, CEILING

if TYPE_CHECKING:
    from bench.load import LoadResult

#: The figures compared with the ceiling (service/ceiling): those of GET /auth/me and of
#: the login, all it serves.
CEILING_RATIOS = (
    "me_rps",
    "me_p50_ms",
    "me_p99_ms",
    "login_rps",
    "login_pct_of_bound",
    "login_pct_of_flat_out",
)


def rotated(sides: Sequence[str], number: int) -> list[str]:
    """The order of the sides in round `number` (1, 2, ...): each round starts one side
    further along (A B C, B C A, C A B, ...), so that no side is always measured first."""
    shift = (number - 1) % len(sides)
    return [*sides[shift:], *sides[:shift]]


def spread(values: Sequence[float]) -> dict[str, float]:
    """The median, min and max of some rounds' values."""
    found = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return {key: round(value, 4) for key, value in found.items()}


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}


def ratios(
    top: list[dict[str, float]], bottom: list[dict[str, float]], keys: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """top/bottom of each figure, round by round: the median, min and max of the rounds'
    ratios and every round's; None when a round has nothing to divide by."""
    result: dict[str, dict[str, Any] | None] = {}
    for key in keys:
        pairs = [(a[key], b[key]) for a, b in zip(top, bottom, strict=True)]
        if not pairs or not all(b for _, b in pairs):
            result[key] = None
            continue
        each = [a / b for a, b in pairs]
        result[key] = {**spread(each), "rounds": [round(r, 4) for r in each]}
    return result


def conclude(group: dict[str, Any], keys: Sequence[str], *, nest: str | None = None) -> None:
    """Sum up the sides of one measurement (`group[side]["rounds"]`): each side's medians
    (in `group[side][nest]`, or beside its rounds), `ratio` (service/Flask, of `keys`)
    and, when the ceiling was measured, `ceiling_ratio` (service/ceiling, of the
    /auth/me figures it has)."""
    for side in ALL_SIDES:
        if side in group:
            found = medians(group[side]["rounds"])
            if nest:
                group[side][nest] = found
            else:
                group[side].update(found)
    service = group["service"]["rounds"]
    group["ratio"] = ratios(service, group["flask"]["rounds"], keys)
    if CEILING in group:
        ceiling = group[CEILING]["rounds"]
        shared = [key for key in CEILING_RATIOS if key in ceiling[0]]
        group["ceiling_ratio"] = ratios(service, ceiling, shared)


def me_figures(result: LoadResult) -> dict[str, float]:
    """GET /auth/me's figures of one wrk run."""
    return {
        "me_rps": round(result.rps, 2),
        "me_p50_ms": result.latency_ms["p50"],
        "me_p99_ms": result.latency_ms["p99"],
    }


def side_figures(
    loads: dict[str, LoadResult], pss_idle: float, pss_peak: float
) -> dict[str, float]:
    """A side's figures of one round (those its loads give; 0 for the others).
    `login_pct_of_bound` and `login_pct_of_flat_out` are filled in by
    report.conclude_results, once the bound is final."""

    def rps(name: str) -> float:
        return loads[name].rps if name in loads else 0.0

    def p99(name: str) -> float:
        return loads[name].latency_ms["p99"] if name in loads else 0.0

    idle_p99, busy_p99 = p99("me_idle_probe"), p99("me_under_login_probe")
    figures = {
        **me_figures(loads["me"]),
        "login_rps": rps("login"),
        "login_pct_of_bound": 0.0,
        "login_pct_of_flat_out": 0.0,
        "me_idle_p99_ms": idle_p99,
        "me_under_login_p99_ms": busy_p99,
        "me_p99_under_login_ratio": busy_p99 / idle_p99 if idle_p99 else 0.0,
        "register_rps": rps("register"),
        "refresh_rps": rps("refresh"),
        "mem_idle_mb": pss_idle,
        "mem_load_mb": pss_peak,
    }
    return {key: round(value, 3) for key, value in figures.items()}
