"""The ScaleLLM comparison's report: ratios to vLLM's server, the issue's targets, the markdown.

Pure functions over the rows that benchmarks/scalellm.py measures (one dict per stack, phase
and concurrency level; `common.summarize` keys plus `stack`, `replicas`, `phase`); nothing here
starts a process or reads a file.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]

BASELINE = "vllm-server"
PEERS = ("vllm-router", "sglang-router")
OURS = "scaleserve"
STACK_ORDER = (BASELINE, *PEERS, OURS)  # columns of the tables, series of the plots
METRICS = (  # key, heading, lower is better
    ("ttft_p50_ms", "TTFT p50 (ms)", True),
    ("tbt_p50_ms", "TBT p50 (ms)", True),
    ("output_tokens_per_s", "output tokens/s", False),
)
TITLES = {
    "vllm-server": "vLLM server",
    "vllm-router": "vllm-router",
    "sglang-router": "sglang-router",
    "scaleserve": "scaleserve",
}
# the targets at 64 streams against vLLM's server: name, key, bound, lower is better
BASELINE_TARGETS = (
    ("TTFT p50 <= 0.5x", "ttft_p50_ms", 0.5, True),
    ("TBT p50 <= 0.5x", "tbt_p50_ms", 0.5, True),
    ("tokens/s >= 1.5x", "output_tokens_per_s", 1.5, False),
)
TARGET_LEVEL = 64
PEER_LEVELS = (64, 128)


def phase_of(row: Row) -> int:
    """The phase a row belongs to: the engine replicas behind the routers in that run (rows
    written before `phase` was recorded carry only `replicas`)."""
    return int(row["phase"] if "phase" in row else row["replicas"])


def by_phase(rows: list[Row]) -> dict[int, list[Row]]:
    """Rows grouped by phase, phases in ascending order."""
    out: dict[int, list[Row]] = {}
    for row in rows:
        out.setdefault(phase_of(row), []).append(row)
    return dict(sorted(out.items()))


def ratio_key(metric: str) -> str:
    """`ttft_p50_ms` -> `ttft_p50_ratio`, `output_tokens_per_s` -> `tokens_per_s_ratio`."""
    return metric.replace("_ms", "").replace("output_", "") + "_ratio"


def ratios(rows: list[Row]) -> list[Row]:
    """Each stack's figures over vLLM's server direct at the same level in the same phase."""
    base = {(phase_of(r), r["concurrency"]): r for r in rows if r["stack"] == BASELINE}
    out = []
    for row in rows:
        ref = base.get((phase_of(row), row["concurrency"]))
        if ref is None or row["stack"] == BASELINE:
            continue
        entry = {"phase": phase_of(row), "stack": row["stack"], "replicas": row["replicas"]}
        entry["concurrency"] = row["concurrency"]
        for key, _, _ in METRICS:
            a, b = row.get(key), ref.get(key)
            entry[ratio_key(key)] = round(a / b, 3) if isinstance(a, int | float) and b else None
        out.append(entry)
    return out


def ahead_on_all(a: Row, b: Row) -> bool:
    """`a` ahead of `b` on TTFT p50, TBT p50 and tokens/s."""
    return bool(
        a["ttft_p50_ms"] < b["ttft_p50_ms"]
        and a["tbt_p50_ms"] < b["tbt_p50_ms"]
        and a["output_tokens_per_s"] > b["output_tokens_per_s"]
    )


def evaluate_targets(rows: list[Row]) -> list[Row]:
    """The issue's targets, each with its figures and whether this run met it."""
    out: list[Row] = []
    for phase, phase_rows in by_phase(rows).items():
        idx = {(r["stack"], r["concurrency"]): r for r in phase_rows}
        ours, base = idx.get((OURS, TARGET_LEVEL)), idx.get((BASELINE, TARGET_LEVEL))
        if ours and base:
            for name, key, bound, lower in BASELINE_TARGETS:
                value = ours[key] / base[key]
                out.append(
                    {
                        "phase": phase,
                        "target": f"{TARGET_LEVEL} streams vs vLLM server: {name}",
                        "value": round(value, 3),
                        "met": value <= bound if lower else value >= bound,
                    }
                )
        for level in PEER_LEVELS:
            for peer in PEERS:
                a, b = idx.get((OURS, level)), idx.get((peer, level))
                if a and b:
                    out.append(
                        {
                            "phase": phase,
                            "target": f"{level} streams: scaleserve ahead of {peer} on all three",
                            "value": None,
                            "met": ahead_on_all(a, b),
                        }
                    )
        if any(r["stack"] == OURS for r in phase_rows):
            errors = sum(r["errors"] for r in phase_rows if r["stack"] == OURS)
            out.append(
                {
                    "phase": phase,
                    "target": "scaleserve: zero errors at every level",
                    "value": errors,
                    "met": errors == 0,
                }
            )
    return out


# --- markdown --------------------------------------------------------------------------------


def cell(row: Row | None, key: str, ref: Row | None) -> str:
    """A table cell: the figure (3 significant digits, whole numbers from 100 up) and its ratio
    to `ref` in brackets; "—" where the stack has no row; no ratio for the baseline itself."""
    if row is None:
        return "—"
    value = row[key]
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    if ref is not None and ref is not row and ref.get(key):
        text += f" ({value / ref[key]:.2f}x)"
    return text


def cpu_cell(row: Row | None) -> str:
    if row is None:
        return "—"
    return f"{row['front_cpu_s_per_1k_tokens']:.2f} ({row['stack_cpu_s_per_1k_tokens']:.2f})"


class PhaseTables:
    """One phase's rows, indexed for its tables: the stacks present (in `STACK_ORDER`), their
    column headings, the levels."""

    def __init__(self, phase: int, rows: list[Row]) -> None:
        self.phase = phase
        self.rows = rows
        self.stacks = [s for s in STACK_ORDER if any(r["stack"] == s for r in rows)]
        self.idx = {(r["stack"], r["concurrency"]): r for r in rows}
        self.levels = sorted({r["concurrency"] for r in rows})
        self.heads = [
            f"{TITLES[s]} x{next(r['replicas'] for r in rows if r['stack'] == s)}"
            for s in self.stacks
        ]

    def header(self) -> list[str]:
        return [
            "| concurrency | " + " | ".join(self.heads) + " |",
            "|---:|" + "---:|" * len(self.heads),
        ]

    def metric_table(self, key: str, heading: str) -> list[str]:
        lines = ["", f"## {heading}, {self.phase} engine replica(s) behind each router", ""]
        lines += self.header()
        for level in self.levels:
            ref = self.idx.get((BASELINE, level))
            cells = [cell(self.idx.get((s, level)), key, ref) for s in self.stacks]
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
        return lines

    def cpu_table(self) -> list[str]:
        """Empty when any row lacks CPU figures (runs from before they were measured)."""
        if not all("front_cpu_s_per_1k_tokens" in r for r in self.rows):
            return []
        lines = ["", f"## CPU seconds per 1k output tokens, {self.phase} replica(s)", ""]
        lines.append(
            "Router/gateway plus engine main processes; in brackets, all of the stack's "
            "processes (engine cores and model workers too)."
        )
        lines += ["", *self.header()]
        for level in self.levels:
            cells = [cpu_cell(self.idx.get((s, level))) for s in self.stacks]
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
        return lines

    def errors_line(self) -> list[str]:
        def count(stack: str, key: str) -> int:
            return sum(r.get(key, 0) for r in self.rows if r["stack"] == stack)

        counts = "; ".join(
            f"{TITLES[s]} {count(s, 'errors')} ({count(s, 'timeouts')})" for s in self.stacks
        )
        return ["", f"Errors (timeouts), all levels, {self.phase} replica(s): {counts}"]


def targets_table(targets: list[Row]) -> list[str]:
    if not targets:
        return []
    lines = ["", "## Targets", "", "| replicas | target | value | met |", "|---:|---|---:|---|"]
    for t in targets:
        value = "" if t["value"] is None else t["value"]
        lines.append(f"| {t['phase']} | {t['target']} | {value} | {'yes' if t['met'] else 'no'} |")
    return lines


def render_markdown(payload: dict[str, Any]) -> str:
    """scalellm.md: when and where, then per phase the paper's table shape (TTFT, TBT, tokens/s
    per level per stack, with ratios), CPU use and errors; stacks that did not serve; targets."""
    m = payload.get("machine", {})
    lines = [
        "# ScaleLLM comparison: scaleserve vs vLLM's OpenAI server and Rust routers",
        "",
        f"{payload.get('date', '')}; {m.get('nproc')} x {m.get('cpu_model')}, "
        f"{m.get('memory_gib')} GiB, no GPU; load average before/after "
        f"{payload.get('load_avg_before')} / {payload.get('load_avg_after')}.",
        f"Command: `{payload.get('command', '')}`",
        "",
        "Cells: the figure, and in brackets its ratio to vLLM's OpenAI server direct at the same "
        "concurrency (lower is better for TTFT/TBT, higher for tokens/s). p99 and the raw rows "
        "are in scalellm.json.",
    ]
    for phase, phase_rows in by_phase(payload["rows"]).items():
        tables = PhaseTables(phase, phase_rows)
        for key, heading, _ in METRICS:
            lines += tables.metric_table(key, heading)
        lines += tables.cpu_table()
        lines += tables.errors_line()
    if payload.get("not_serving"):
        lines += [
            "",
            "Stacks that did not serve here: "
            + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in payload["not_serving"].items()),
        ]
    lines += targets_table(payload.get("targets") or [])
    return "\n".join(lines) + "\n"
