"""The simulator at scale (not a CI test): many endpoints on a shared GPU cluster over a day.

Uses the coarse engine model (scaleserve/simulate/coarse.py: one step per operator pass, the
profile's steady state per replica), and runs every endpoint's operator pass (the operator's
decide on a snapshot of the simulated cluster; thresholds or objectives mode, through the
simulator's adapter) at the operator's interval, on nodes of 8 GPUs the endpoints share. Each
endpoint has its own diurnal day (peak 30x its trough, a random peak and time zone). Reports
wall time, the cost of decide per pass (p50/p99), GPU-hours, reshapes and the invariants: each
endpoint within budget + surge, the cluster within its GPUs, never zero ready replicas after the
first Ready, every reshape completed. Writes benchmarks/results/simulate_scale.json.

    python benchmarks/simulate_scale.py --profile PROFILE.yaml [--endpoints 1000]
        [--gpus 10000] [--hours 24] [--interval 10] [--strategy thresholds|objectives]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from scaleserve.profiles import Profile, parse_profile
from scaleserve.simulate.coarse import CoarseEndpoint, act, endpoint_for, serve
from scaleserve.simulate.compare import Setup, build
from scaleserve.simulate.metrics import Objectives
from scaleserve.simulate.nodes import Nodes
from scaleserve.simulate.strategies import Scaleserve

RESULTS = Path(__file__).resolve().parent / "results" / "simulate_scale.json"
DAY = 86_400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=10_000, help="GPUs in the cluster")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=10.0, help="operator pass, seconds")
    parser.add_argument("--peak-rps", type=float, default=60.0, help="median endpoint peak")
    parser.add_argument("--strategy", default="thresholds", help="thresholds or objectives[:MIN]")
    parser.add_argument("--ttft-ms", type=float, default=1000.0, help="objectives mode")
    parser.add_argument("--tbt-ms", type=float, default=20.0, help="objectives mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    print(json.dumps(run(args), indent=1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = parse_profile(Path(args.profile).read_text())
    setup = Setup(objectives=Objectives(args.ttft_ms, args.tbt_ms))
    nodes = Nodes(args.gpus, setup.per_node)
    endpoints = []
    for _ in range(args.endpoints):
        strategy = build(args.strategy, setup, profile)
        assert isinstance(strategy, Scaleserve), "thresholds or objectives[:MIN]"
        endpoints.append(endpoint_for(strategy.control, profile, nodes))
    started = time.perf_counter()
    stats, decide_ns, decide_cpu_ns = _day(args, profile, endpoints, setup.gpus + setup.surge)
    wall = time.perf_counter() - started
    unfinished = sum(1 for e in endpoints if e.control.reshape_unfinished)
    out = {
        "strategy": args.strategy,
        "engine_model": "coarse (one step per operator pass, steady state from the profile)",
        "profile": {
            "model": profile.model,
            "gpu": profile.gpu,
            "provenance": profile.provenance.model_dump(),
        },
        "endpoints": args.endpoints,
        "cluster_gpus": args.gpus,
        "simulated_hours": args.hours,
        "interval_s": args.interval,
        "passes_per_endpoint": int(args.hours * 3600 / args.interval),
        "wall_s": round(wall, 1),
        "decide_us": _percentiles(decide_ns),
        # CPU time: wall time less the time other processes on the machine had the CPU
        "decide_cpu_us": _percentiles(decide_cpu_ns),
        "gpu_hours": round(stats["gpu_seconds"] / 3600, 1),
        "output_tokens_per_s": round(stats["tokens"] / (args.hours * 3600), 1),
        "reshapes": int(stats["reshapes"]),
        "invariants": {
            "endpoint_over_budget_plus_surge_passes": int(stats["over_budget"]),
            "max_cluster_gpus_held": int(stats["max_cluster"]),
            "cluster_over_capacity": stats["max_cluster"] > args.gpus,
            "zero_ready_passes_after_first_ready": sum(e.dark_passes for e in endpoints),
            "reshapes_unfinished_at_end": unfinished,
        },
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "note": "2 cores shared with other work: wall times are upper bounds",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


def _percentiles(values: array[int]) -> dict[str, float]:
    ns = np.frombuffer(values, dtype=np.int64)
    return {p: round(float(np.percentile(ns, q)) / 1000, 1) for p, q in (("p50", 50), ("p99", 99))}


def _day(
    args: argparse.Namespace, profile: Profile, endpoints: list[CoarseEndpoint], limit: int
) -> tuple[dict[str, float], array[int], array[int]]:
    """Every endpoint, pass by pass: its traffic, then its operator pass (decide timed)."""
    rng = random.Random(args.seed)
    peaks = [args.peak_rps * math.exp(rng.gauss(0, 0.7)) for _ in endpoints]
    phases = [rng.uniform(0, DAY) for _ in endpoints]
    passes = int(args.hours * 3600 / args.interval)
    decide_ns, decide_cpu_ns = array("q"), array("q")
    stats = dict.fromkeys(["gpu_seconds", "tokens", "reshapes", "over_budget", "max_cluster"], 0.0)
    nodes = endpoints[0].nodes
    for k in range(passes):
        now = (k + 1) * args.interval
        for e, peak, phase in zip(endpoints, peaks, phases, strict=True):
            day = (1 - math.cos(2 * math.pi * (now + phase) / DAY)) / 2
            result = serve(e, now, peak / 30 + (peak - peak / 30) * day, args.interval)
            stats["tokens"] += result.served * profile.workload.output_tokens * args.interval
            stats["reshapes"] += act(e, now, result)
            decide_ns.append(e.control.decide_ns)
            decide_cpu_ns.append(e.control.decide_cpu_ns)
            stats["max_cluster"] = max(stats["max_cluster"], nodes.held)
            stats["gpu_seconds"] += e.gpus() * args.interval
            stats["over_budget"] += e.gpus() > limit
        if k % max(passes // 20, 1) == 0:
            print(f"  {now / 3600:5.1f} h  {nodes.held} GPUs held", flush=True)
    return stats, decide_ns, decide_cpu_ns


if __name__ == "__main__":
    main()
