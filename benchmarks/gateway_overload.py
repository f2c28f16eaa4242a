"""Gateway overload: thousands of concurrent streams against one gateway process.

A synthetic engine (benchmarks/synthetic_engine.py: the engine protocol without a model, tokens
at a fixed rate per stream) behind one `scaleserve gateway` with its admission limits; N
clients open a stream each at once. Reported per level: how many streams were served (200),
refused with 429 (and whether each carried Retry-After), failed otherwise, the gateway's peak
memory (RSS, sampled every 0.2 s) and whether it survived. The point is the shape under
overload (no crash, bounded memory, clean 429s beyond the limits), not speed: every process
shares this machine's cores.

    .venv/bin/python benchmarks/gateway_overload.py --concurrency 1000,5000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.gateway_overhead import (  # noqa: E402
    free_port,
    start_gateway,
    stop,
    synthetic,
    wait_http,
)

RESULTS = ROOT / "benchmarks" / "results" / "gateway_overload.json"


async def one_stream(session, url: str, tokens: int, outcome: collections.Counter) -> None:
    body = {"model": "synthetic", "prompt": "overload", "max_tokens": tokens, "stream": True}
    try:
        async with session.post(url, json=body) as resp:
            if resp.status == 429:
                outcome["429"] += 1
                outcome["429 with retry-after"] += "retry-after" in resp.headers
                await resp.read()
                return
            if resp.status != 200:
                outcome[str(resp.status)] += 1
                await resp.read()
                return
            last = b""
            async for line in resp.content:
                if line.startswith(b"data: "):
                    last = line
            outcome["200 done" if last.startswith(b"data: [DONE]") else "200 cut"] += 1
    except Exception as exc:  # a refused or reset connection counts as such
        outcome[f"error {type(exc).__name__}"] += 1


async def sample_rss(pid: int, peak: list[int], stop_event: asyncio.Event) -> None:
    proc = psutil.Process(pid)
    while not stop_event.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        await asyncio.sleep(0.2)


async def level(url: str, pid: int, concurrency: int, tokens: int) -> dict[str, object]:
    import aiohttp

    outcome: collections.Counter = collections.Counter()
    peak = [psutil.Process(pid).memory_info().rss]
    idle_rss = peak[0]
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, peak, done))
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=600)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *(one_stream(session, url, tokens, outcome) for _ in range(concurrency))
        )
    wall = time.perf_counter() - t0
    done.set()
    await sampler
    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "outcomes": dict(outcome),
        "gateway_rss_idle_mib": round(idle_rss / 2**20, 1),
        "gateway_rss_peak_mib": round(peak[0] / 2**20, 1),
        "gateway_alive": psutil.pid_exists(pid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1000,5000")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s per stream")
    parser.add_argument("--max-concurrency", type=int, default=1024)
    parser.add_argument("--max-queue", type=int, default=1024)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import uvloop

    engine_port, port = free_port(), free_port()
    engine = synthetic(engine_port, args.rate)
    limits = ["--max-concurrency", str(args.max_concurrency), "--max-queue", str(args.max_queue)]
    gateway = start_gateway(port, engine_port, *limits)
    results = []
    load_before = [round(x, 1) for x in os.getloadavg()]
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz")
        for c in (int(x) for x in args.concurrency.split(",") if x):
            result = uvloop.run(level(url + "/v1/completions", gateway.pid, c, args.tokens))
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        stop(gateway)
        stop(engine)
    payload = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_before": load_before,
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "levels": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
