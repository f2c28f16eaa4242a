"""Two gateways side by side in front of one synthetic engine, driven alternately.

`gateway_overhead.py --tracing` (tracing off vs on, gateway_tracing_ab.py) and
`gateway_overhead.py --baseline TREE` (another checkout's gateway vs this one) both run here:
at each concurrency of the latency runs the engine direct and the two gateways are driven in
turn, for `--rounds` rounds, the gateways' order swapped every round, so that drift in the
machine's load hits both alike; the figures per side pool the rounds. The cost per request is
the gateway process's CPU time over the requests it served (warm-ups included on both sides).

    .venv/bin/python benchmarks/gateway_overhead.py --baseline /path/to/other/checkout \
        --concurrency 4,16,64
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway_overhead import (
    ROOT,
    Run,
    free_port,
    measure,
    pct,
    start_gateway,
    stop,
    synthetic,
    wait_http,
)

BASELINE_SIDES = ("before", "after")


def alternate(
    args: argparse.Namespace,
    levels: list[int],
    engine_port: int,
    gateways: dict[str, tuple[int, subprocess.Popen[bytes]]],
    direct: bool = True,
) -> dict[int, dict[str, Run]]:
    """Per concurrency, the pooled runs of each gateway side (and of "direct", the engine
    alone, when `direct`)."""
    import uvloop

    for port, _ in gateways.values():
        wait_http(f"http://127.0.0.1:{port}/readyz")
    names = list(gateways)
    pooled: dict[int, dict[str, Run]] = {}
    for c in levels:
        per_worker = max(2, -(-args.min_requests // c))
        first = ["direct"] if direct else []
        runs = {side: Run("gateway", side, c) for side in [*first, *names]}
        for i in range(args.rounds):
            for side in [*first, *(names if i % 2 == 0 else names[::-1])]:
                port, pid = (
                    (0, 0) if side == "direct" else (gateways[side][0], gateways[side][1].pid)
                )
                run = uvloop.run(
                    measure(
                        "direct" if side == "direct" else "gateway",
                        "latency",
                        c,
                        per_worker,
                        args.tokens,
                        f"127.0.0.1:{engine_port}",
                        f"http://127.0.0.1:{port}",
                        pid,
                        "synthetic",
                        args.tokens / args.rate,
                    )
                )
                pool(runs[side], run)
        pooled[c] = runs
    return pooled


def pool(into: Run, run: Run) -> None:
    into.requests += run.requests
    into.tokens += run.tokens
    into.events += run.events
    into.errors += run.errors
    into.wall_s += run.wall_s
    into.gateway_cpu_s += run.gateway_cpu_s
    into.ttft_ms += run.ttft_ms
    into.tbt_ms += run.tbt_ms


def figures(r: Run, direct: Run | None = None) -> dict[str, float]:
    """One side's pooled figures; with `direct`, the TTFT it adds over the engine alone."""
    out = {
        "requests": r.requests,
        "cpu_ms_per_request": round(r.gateway_cpu_s * 1000 / max(1, r.requests), 4),
        "ttft_p50_ms": round(pct(r.ttft_ms, 50), 3),
        "ttft_p99_ms": round(pct(r.ttft_ms, 99), 3),
        "tbt_p50_ms": round(pct(r.tbt_ms, 50), 4),
        "tokens_per_s": round(r.tokens / r.wall_s, 1) if r.wall_s else 0.0,
        "errors": r.errors,
    }
    if direct is not None:
        out["added_ttft_p50_ms"] = round(pct(r.ttft_ms, 50) - pct(direct.ttft_ms, 50), 3)
        out["added_ttft_p99_ms"] = round(pct(r.ttft_ms, 99) - pct(direct.ttft_ms, 99), 3)
    return out


def baseline_ab(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    """This checkout's gateway ("after") against the one in `args.baseline` ("before"): the
    same interpreter and packages, each gateway started in its tree, whose `scaleserve` then
    comes first on the import path (`python -m` puts the working directory first)."""
    trees = {"before": Path(args.baseline).resolve(), "after": ROOT}
    imported = {side: _imported_from(tree) for side, tree in trees.items()}
    if imported["before"] == imported["after"]:
        raise SystemExit(f"both trees import the same gateway: {imported['after']}")
    engine_port = free_port()
    engine = synthetic(engine_port, args.rate)
    gateways = {}
    for side in BASELINE_SIDES:
        port = free_port()
        gateway = start_gateway(port, engine_port, "--max-concurrency", "0", cwd=trees[side])
        gateways[side] = (port, gateway)
    try:
        pooled = alternate(args, levels, engine_port, gateways)
    finally:
        for _, proc in gateways.values():
            stop(proc)
        stop(engine)
    rows = []
    for c, runs in pooled.items():
        before = figures(runs["before"], runs["direct"])
        after = figures(runs["after"], runs["direct"])
        rows.append(
            {
                "concurrency": c,
                "direct": figures(runs["direct"]),
                "before": before,
                "after": after,
                "cpu_per_request_after_over_before": round(
                    after["cpu_ms_per_request"] / max(1e-9, before["cpu_ms_per_request"]), 3
                ),
            }
        )
    _print(args, rows)
    return {
        "baseline": {
            "imported": imported,
            "rate_tokens_per_s": args.rate,
            "tokens": args.tokens,
            "rounds": args.rounds,
            "rows": rows,
        }
    }


def _imported_from(tree: Path) -> str:
    """Where a process started in `tree` imports the gateway from."""
    code = "import scaleserve.gateway.app as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, check=True)
    return out.stdout.decode().strip()


def print_table(title: str, columns: dict[str, int], rows: list[list[str]]) -> None:
    """A title, then right-aligned columns (header: width) of pre-formatted cells."""
    print(title)
    print(" ".join(f"{h:>{w}}" for h, w in columns.items()))
    for cells in rows:
        print(" ".join(f"{c:>{w}}" for c, w in zip(cells, columns.values(), strict=True)))


def _print(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    columns = {"conc": 5, "cpu/req before": 15, "after": 9, "after/before": 13}
    columns |= {"+TTFT p50 before": 17, "after ": 8, "+TTFT p99 before": 17, "after  ": 8}
    cells = []
    for r in rows:
        a, b = r["before"], r["after"]
        cells.append(
            [
                str(r["concurrency"]),
                f"{a['cpu_ms_per_request']:.3f}ms",
                f"{b['cpu_ms_per_request']:.3f}ms",
                f"{r['cpu_per_request_after_over_before']:.3f}",
                f"{a['added_ttft_p50_ms']:.3f}ms",
                f"{b['added_ttft_p50_ms']:.3f}ms",
                f"{a['added_ttft_p99_ms']:.3f}ms",
                f"{b['added_ttft_p99_ms']:.3f}ms",
                str(a["errors"] + b["errors"]),
            ]
        )
    title = (
        f"\nbefore ({args.baseline}) vs after (this tree): {args.rate:g} tokens/s per stream, "
        f"{args.tokens} tokens per request, {args.rounds} alternating rounds"
    )
    print_table(title, columns | {"err": 4}, cells)
