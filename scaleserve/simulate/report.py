"""Results of a comparison: JSON, a markdown table and PNG plots (one panel per strategy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Cell = Callable[[dict[str, Any]], str]
COLUMNS: list[tuple[str, Cell]] = [
    ("strategy", lambda s: s["strategy"]),
    ("TTFT p50/p99 ms", lambda s: f"{_f(s['ttft_ms']['p50'])} / {_f(s['ttft_ms']['p99'])}"),
    ("TBT p50/p99 ms", lambda s: f"{_f(s['tbt_ms']['p50'])} / {_f(s['tbt_ms']['p99'])}"),
    ("goodput", lambda s: _share(s["goodput"]["share"])),
    ("output tok/s", lambda s: f"{s['output_tokens_per_s']:,.0f}"),
    ("trough TBT p50 ms", lambda s: _f(s["trough_tbt_p50_ms"])),
    ("peak output tok/s", lambda s: f"{s['peak_output_tokens_per_s']:,.0f}"),
    ("GPU-hours", lambda s: f"{s['gpu_hours']:.2f}"),
    ("max GPUs", lambda s: str(s["max_gpus"])),
    ("reshapes", lambda s: str(s["reshapes"])),
    ("capacity lost", lambda s: _share(s["capacity_lost_share"])),
    ("rejected", lambda s: str(sum(s["requests"]["rejected"].values()))),
]


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(summaries: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = ["| " + " | ".join(cell(s) for _, cell in COLUMNS) + " |" for s in summaries]
    return "\n".join([head, rule, *rows]) + "\n"


def write(
    out: Path, run: dict[str, Any], summaries: list[dict[str, Any]], plots: bool
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "simulation.json", out / "simulation.md"]
    written[0].write_text(json.dumps({**run, "strategies": summaries}, indent=1) + "\n")
    written[1].write_text(markdown(summaries))
    if plots:
        written += _plots(out, summaries)
    return written


def _plots(out: Path, summaries: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summaries)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), sharex=True, squeeze=False)
    for ax, s in zip(axes[:, 0], summaries, strict=True):
        series = s["over_time"]
        hours = [t / 3600 for t in series["t_s"]]
        ax.plot(hours, series["tbt_p50_ms"], label="TBT p50 ms", color="tab:blue")
        ax.plot(hours, series["ttft_p99_ms"], label="TTFT p99 ms", color="tab:red", alpha=0.6)
        ax.set_yscale("log")
        ax.set_title(s["strategy"], fontsize=9)
        gpus = ax.twinx()
        gpus.step(hours, series["gpus"], where="post", color="tab:gray", label="GPUs")
        gpus.set_ylim(0, max(max(series["gpus"]), 1) * 1.15)
        gpus.set_ylabel("GPUs", fontsize=8)
    axes[0, 0].legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("simulated hours")
    fig.tight_layout()
    path = out / "simulation.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
