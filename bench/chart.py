"""The benchmark's chart: every figure for both sides (and the ceiling's, where it has one),
the medians of the rounds, with the command, machine and date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"service": "#3b6fb6", "flask": "#c8553d", "ceiling": "#9a9a9a"}
LABELS = {
    "service": "this (Quart)",
    "flask": "Flask reference",
    "ceiling": "ceiling (bare Quart, no database)",
}
PANELS = [
    ("me_rps", "GET /auth/me throughput", "req/s"),
    ("me_p99_ms", "GET /auth/me p99", "ms"),
    ("login_pct_of_bound", "POST /auth/login, % of bcrypt bound", "%"),
    ("me_p99_under_login_ratio", "/auth/me p99 while logins saturate\n÷ idle p99", "×"),
    ("register_rps", "POST /auth/register burst", "req/s"),
    ("refresh_rps", "POST /auth/refresh (each token once)", "req/s"),
    ("mem_idle_mb", "memory (PSS), idle", "MiB"),
    ("mem_load_mb", "memory (PSS), peak under load", "MiB"),
]


def _bars(
    ax: Any, groups: list[str], values: dict[str, list[float]], title: str, unit: str
) -> None:
    width = 0.76 / len(values)
    for number, side in enumerate(values):
        xs = [i + (number - (len(values) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values[side], width, color=COLORS[side], label=LABELS[side])
        ax.bar_label(bars, labels=[_short(v) for v in values[side]], fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.margins(y=0.18)


def _short(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def draw(result: dict[str, Any], path: Path) -> None:
    backends = list(result["results"])
    scaling = result.get("scaling") or {}
    growth = result.get("growth") or {}
    extra = int(bool(scaling.get("workers"))) * 2 + int(bool(growth.get("rows")))
    rows = 2 + (1 if extra else 0)
    fig, axes = plt.subplots(rows, 4, figsize=(16, 3.6 * rows + 0.9), squeeze=False)
    for ax, (key, title, unit) in zip(axes.flat, PANELS, strict=False):
        values = {
            side: [result["results"][b][side]["figures"][key] for b in backends]
            for side in COLORS
            if all(key in result["results"][b].get(side, {}).get("figures", {}) for b in backends)
        }
        _bars(ax, backends, values, title, unit)
    if rows == 3:
        panels = iter(axes[2])
        if scaling.get("workers"):
            workers = list(scaling["workers"])
            for key, title in (("me_rps", "GET /auth/me"), ("login_rps", "POST /auth/login")):
                ax = next(panels)
                for side in (s for s in COLORS if key in scaling["workers"][workers[0]].get(s, {})):
                    ys = [scaling["workers"][w][side][key] for w in workers]
                    ax.plot(
                        [int(w) for w in workers], ys, "o-", color=COLORS[side], label=LABELS[side]
                    )
                ax.set_xticks([int(w) for w in workers])
                ax.set_xlabel("workers", fontsize=8)
                ax.set_ylabel("req/s", fontsize=8)
                ax.set_title(f"{title} by workers ({scaling['backend']})", fontsize=9)
                ax.tick_params(labelsize=7)
                ax.set_ylim(bottom=0)
        if growth.get("rows"):
            ax = next(panels)
            sizes = list(growth["rows"])
            values = {
                side: [growth["rows"][n][side]["me_p99_ms"] for n in sizes]
                for side in ("service", "flask")
            }
            _bars(
                ax,
                [f"{int(n):,} rows" for n in sizes],
                values,
                "GET /auth/me p99 as the checked table grows\n"
                "(sessions here, blocklist there; PostgreSQL)",
                "ms",
            )
        for ax in panels:
            ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=9, ncols=3)
    meta = result["meta"]
    machine = meta["machine"]
    bound = result["bcrypt"]
    plan = meta["plan"]
    footer = (
        f"command: {meta['command']}    date: {meta['date']}\n"
        f"machine: {machine['cores']} cores, {machine['cpu']}, {machine['ram_gib']} GiB RAM, "
        f"{machine['os']}; load average {machine['load_average_at_start']} at the start, "
        f"{machine.get('load_average_at_end', '?')} at the end\n"
        f"{plan['workers']} worker(s) per side (hypercorn+uvloop vs gunicorn "
        f"{plan['reference_worker_class']}), {plan['duration']:g}s per figure, "
        f"medians of {plan.get('rounds', 1)} interleaved rounds, bcrypt cost "
        f"{bound['rounds']} ({bound['seconds_per_hash'] * 1000:.0f} ms/hash, bound "
        f"{bound['bound_per_s']:.1f}/s)"
    )
    fig.suptitle(
        "Quart Auth API vs Flask reference (same API, same machine, same run)", x=0.01, ha="left"
    )
    fig.text(0.01, 0.005, footer, fontsize=8, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
