"""What request tracing costs the gateway, A/B: `gateway_overhead.py --tracing` runs this.

One synthetic engine, two gateways in front of it: tracing off (no OTEL_* env: no provider, no
spans) and tracing on (OTEL_EXPORTER_OTLP_ENDPOINT at a local sink, benchmarks/otlp_sink.py, and
every request sampled). At each concurrency the two are driven alternately
(gateway_ab.py), for `--rounds` rounds, so that drift in the machine's load hits both alike; the
figures per side pool the rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import Any

from gateway_ab import alternate, figures, print_table
from gateway_overhead import Run, free_port, start, start_gateway, stop, synthetic, wait_http

SIDES = ("off", "on")


def tracing_ab(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    engine_port, sink_port = free_port(), free_port()
    engine = synthetic(engine_port, args.rate)
    sink = start([sys.executable, "benchmarks/otlp_sink.py", "--port", str(sink_port)])
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    ports = {side: free_port() for side in SIDES}
    gateways = {
        side: (
            ports[side],
            start_gateway(
                ports[side],
                engine_port,
                "--max-concurrency",
                "0",
                env=traced if side == "on" else None,
            ),
        )
        for side in SIDES
    }
    try:
        wait_http(f"http://127.0.0.1:{sink_port}/stats")
        pooled = alternate(args, levels, engine_port, gateways, direct=False)
        with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/stats", timeout=5) as resp:
            received = json.loads(resp.read())
    finally:
        for _, proc in gateways.values():
            stop(proc)
        stop(engine)
    stop(sink)  # after the traced gateway flushed its last batch at shutdown
    rows = [_row(c, runs["off"], runs["on"]) for c, runs in pooled.items()]
    _print(args, rows, received)
    return {
        "tracing": {
            "rate_tokens_per_s": args.rate,
            "tokens": args.tokens,
            "rounds": args.rounds,
            "sink_received_before_shutdown": received,
            "rows": rows,
        }
    }


def _row(c: int, off: Run, on: Run) -> dict[str, Any]:
    a, b = figures(off), figures(on)
    return {
        "concurrency": c,
        "off": a,
        "on": b,
        "cpu_per_request_on_over_off": round(
            b["cpu_ms_per_request"] / max(1e-9, a["cpu_ms_per_request"]), 3
        ),
        "added_cpu_us_per_request": round(
            (b["cpu_ms_per_request"] - a["cpu_ms_per_request"]) * 1000, 1
        ),
        "added_ttft_p50_ms": round(b["ttft_p50_ms"] - a["ttft_p50_ms"], 3),
    }


def _print(args: argparse.Namespace, rows: list[dict[str, Any]], received: dict) -> None:
    columns = {"conc": 5, "cpu/req off": 12, "cpu/req on": 11, "on/off": 7, "+us/req": 8}
    columns |= {"TTFT p50 off": 13, "on": 8, "tok/s off": 10, "on ": 8, "err": 4}
    cells = []
    for r in rows:
        a, b = r["off"], r["on"]
        cells.append(
            [
                str(r["concurrency"]),
                f"{a['cpu_ms_per_request']:.3f}ms",
                f"{b['cpu_ms_per_request']:.3f}ms",
                f"{r['cpu_per_request_on_over_off']:.3f}",
                f"{r['added_cpu_us_per_request']:.1f}",
                f"{a['ttft_p50_ms']:.3f}ms",
                f"{b['ttft_p50_ms']:.3f}ms",
                f"{a['tokens_per_s']:.0f}",
                f"{b['tokens_per_s']:.0f}",
                str(a["errors"] + b["errors"]),
            ]
        )
    title = (
        f"\ntracing off vs on (sampling 1.0, OTLP/HTTP to a local sink): {args.rate:g} tokens/s "
        f"per stream, {args.tokens} tokens per request, {args.rounds} alternating rounds"
    )
    print_table(title, columns, cells)
    print(
        f"sink received (before shutdown): {received['spans']} spans "
        f"in {received['exports']} exports"
    )
