"""The ScaleLLM comparison's plots (matplotlib, Agg): latency and throughput vs concurrency.

scalellm_latency.png: TTFT p50 and TBT p50 side by side, log-log; scalellm_throughput.png:
output tokens/s. One series per stack and phase (solid: one replica, dashed: more).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.scalellm_report import BASELINE, STACK_ORDER, TITLES, Row, phase_of

COLORS = {
    "vllm-server": "tab:gray",
    "vllm-router": "tab:orange",
    "sglang-router": "tab:green",
    "scaleserve": "tab:blue",
}
LATENCY = (("ttft_p50_ms", "TTFT p50 (ms)"), ("tbt_p50_ms", "TBT p50 (ms)"))


def minor_label(value: float, _: object) -> str:
    """Log-axis minor ticks: label 2x and 5x each decade."""
    mantissa = f"{value:.0e}"[0]
    return f"{value:g}" if mantissa in "25" else ""


def series(rows: list[Row]) -> list[tuple[int, str, list[Row]]]:
    """(phase, stack, its rows by concurrency), phases ascending, stacks in `STACK_ORDER`."""
    order = {name: i for i, name in enumerate(STACK_ORDER)}
    groups: dict[tuple[int, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((phase_of(row), order[row["stack"]], row["stack"]), []).append(row)
    return [
        (phase, stack, sorted(points, key=lambda r: r["concurrency"]))
        for (phase, _, stack), points in sorted(groups.items())
    ]


def series_label(phase: int, stack: str, replicas: int) -> str:
    """The legend entry; the baseline runs in every phase at one replica, so its later phases
    say which run they are."""
    extra = f" ({phase}-replica run)" if stack == BASELINE and phase != 1 else ""
    return f"{TITLES[stack]} x{replicas}{extra}"


def plot(payload: dict[str, Any], latency_png: Path, throughput_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    rows: list[Row] = payload["rows"]
    lines = series(rows)
    levels = sorted({r["concurrency"] for r in rows})

    def draw(ax: Any, key: str) -> None:
        for phase, stack, points in lines:
            ax.plot(
                [p["concurrency"] for p in points],
                [p[key] for p in points],
                marker="o" if phase == 1 else "s",
                linestyle="-" if phase == 1 else "--",
                color=COLORS.get(stack),
                label=series_label(phase, stack, points[0]["replicas"]),
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrent streams")
        ax.grid(True, which="both", alpha=0.3)

    nproc = payload.get("machine", {}).get("nproc")
    title = f"tiny model, {nproc} CPU cores, {payload.get('date', '')[:10]}"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    for ax, (key, heading) in zip(axes, LATENCY, strict=True):
        draw(ax, key)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))
        ax.set_ylabel(heading)
        ax.set_title(heading + " vs concurrency")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("Latency, " + title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 5))
    draw(ax, "output_tokens_per_s")
    ax.set_ylabel("output tokens/s")
    ax.set_title("Throughput vs concurrency, " + title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(throughput_png, dpi=110)
    plt.close(fig)
