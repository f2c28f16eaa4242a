"""scaleserve's engine (gRPC) vs vLLM's own OpenAI server, same model and settings, one run.

    .venv/bin/python benchmarks/engine_vs_vllm.py [--model DIR] [--concurrency 1,4,16,64]

Both servers run side by side on this machine for the whole run; each concurrency level runs
on one, then the other (alternating which goes first), so drift hits both alike. Every request
sends the same token-id prompt, greedy, `ignore_eos`, a fixed number of output tokens.
Prints a table and writes benchmarks/results/engine_vs_vllm.json. Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    FIGURE_COLUMNS,
    engine_grpc_stream,
    format_table,
    openai_completion_stream,
    run_closed_loop,
    write_json,
)
from benchmarks.stacks import (  # noqa: E402
    Proc,
    free_port,
    stop_all,
    vllm_openai_server_cmd,
    wait_ready,
)

COLUMNS = ["concurrency", "target", *FIGURE_COLUMNS]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    import grpc

    from scaleserve.engine.client import EngineClient
    from scaleserve.engine.proto import engine_pb2_grpc

    common = ["--dtype", args.dtype, "--max-model-len", str(args.max_model_len)]
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    logs = Path(args.log_dir)
    ours_cmd = [sys.executable, "-m", "scaleserve", "engine", "--model", args.model]
    ours_cmd += ["--served-name", "tiny", "--host", "127.0.0.1", "--port", str(grpc_port)]
    ours_cmd += ["--metrics-port", str(metrics_port), *common]
    theirs_cmd = vllm_openai_server_cmd(args.model, http_port, common)
    ours = Proc("scaleserve-engine", ours_cmd, logs / "engine.log").start()
    theirs = Proc("vllm-openai-server", theirs_cmd, logs / "vllm_server.log").start()
    try:
        async with EngineClient(f"127.0.0.1:{grpc_port}") as probe:
            await probe.wait_serving(within_s=600)
        base_url = f"http://127.0.0.1:{http_port}"
        await wait_ready(base_url + "/health", theirs, 600)

        prompt = list(range(10, 10 + args.prompt_tokens))
        extra = {"ignore_eos": True}
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = engine_pb2_grpc.EngineStub(channel)  # type: ignore[no-untyped-call]
        connector = aiohttp.TCPConnector(limit=0)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(600))

        async def send_ours(_: int) -> Any:
            return await engine_grpc_stream(stub, prompt, args.max_tokens, ignore_eos=True)

        async def send_theirs(_: int) -> Any:
            return await openai_completion_stream(
                session, base_url, "tiny", prompt, args.max_tokens, **extra
            )

        targets = {"scaleserve-engine": send_ours, "vllm-openai-server": send_theirs}
        for send in targets.values():  # warm both up
            await run_closed_loop(send, 4, 8)
        rows: list[dict[str, Any]] = []
        for level_index, concurrency in enumerate(args.concurrency):
            order = list(targets)
            if level_index % 2:
                order.reverse()
            total = max(args.min_requests, concurrency * args.rounds)
            for name in order:
                summary = await run_closed_loop(targets[name], concurrency, total)
                summary["target"] = name
                rows.append(summary)
                print(" ".join(f"{c}={summary.get(c)}" for c in COLUMNS), flush=True)
        await session.close()
        await channel.close()
        return {"rows": rows}
    finally:
        stop_all([ours, theirs])


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    by_level: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_level.setdefault(row["concurrency"], {})[row["target"]] = row
    for level, pair in sorted(by_level.items()):
        a, b = pair.get("scaleserve-engine"), pair.get("vllm-openai-server")
        if not a or not b:
            continue
        out.append(
            {
                "concurrency": level,
                "ttft_p50_ratio": round(a["ttft_p50_ms"] / b["ttft_p50_ms"], 3),
                "tbt_p50_ratio": round(a["tbt_p50_ms"] / b["tbt_p50_ms"], 3),
                "tokens_per_s_ratio": round(a["output_tokens_per_s"] / b["output_tokens_per_s"], 3),
            }
        )
    return out


def main() -> int:
    from scaleserve.engine.tiny_model import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("llama")))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 64]
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="requests per worker per level")
    parser.add_argument("--min-requests", type=int, default=16)
    parser.add_argument("--log-dir", default="/tmp/scaleserve-bench-logs")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/engine_vs_vllm.json"))
    args = parser.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)

    result = asyncio.run(bench(args))
    rows = result["rows"]
    summary = ratios(rows)
    print()
    print(format_table(rows, COLUMNS))
    print()
    print(format_table(summary, list(summary[0]) if summary else ["concurrency"]))
    payload = {
        "benchmark": "engine_vs_vllm",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "model": args.model,
        "settings": {
            "dtype": args.dtype,
            "max_model_len": args.max_model_len,
            "max_tokens": args.max_tokens,
            "prompt_tokens": args.prompt_tokens,
            "rounds": args.rounds,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
        "ratios": summary,
    }
    write_json(Path(args.out), payload)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
