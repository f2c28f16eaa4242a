"""Shared load generation and reporting for the benchmarks.

- Streaming clients that record per-request timings: an OpenAI HTTP endpoint (SSE,
  `/v1/completions`) and a scaleserve engine over gRPC. The frame-timed OpenAI client and the
  summaries are `scaleserve.profiling.load`'s (`scaleserve profile` measures with them too),
  re-exported here.
- A closed-loop runner: N concurrent workers, each sending its next request when the previous
  one ends, until a request budget is spent.
- Percentile statistics and output as a table (stdout) and JSON.

Definitions (identical for every target):
- TTFT: from sending the request to receiving the first token.
- TBT (time between tokens): for each stream message after the first, the gap since the
  previous message divided by the number of tokens it carries, counted once per token. A
  message that coalesces k tokens therefore contributes k samples of gap/k.
- Output tokens/s: all tokens received during a level divided by its wall time.
- `openai_stream_by_frames` (any OpenAI server, timed from SSE frames without per-chunk
  usage) records TBT as each stream's mean time between tokens instead; see there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

# the OpenAI stream client and the figures live in the package, for `scaleserve profile`
from scaleserve.profiling.load import RequestRecord, sse_chunks, summarize
from scaleserve.profiling.load import openai_stream_by_frames as openai_stream_by_frames
from scaleserve.profiling.load import percentile as percentile

# `summarize`'s figures in the order the benchmarks' progress tables print them
FIGURE_COLUMNS = [
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tbt_p50_ms",
    "tbt_p99_ms",
    "output_tokens_per_s",
    "tokens_per_message",
    "errors",
]


async def run_closed_loop(
    send: Callable[[int], Awaitable[RequestRecord]], concurrency: int, total: int
) -> dict[str, Any]:
    """`concurrency` workers send requests back to back until `total` were sent."""
    records: list[RequestRecord] = []
    counter = iter(range(total))

    async def worker() -> None:
        for index in counter:
            records.append(await send(index))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    summary = summarize(records, time.perf_counter() - start)
    summary["concurrency"] = concurrency
    return summary


# --- clients ---------------------------------------------------------------------------------


async def openai_completion_stream(
    session: Any,
    base_url: str,
    model: str,
    prompt: Sequence[int] | str,
    max_tokens: int,
    **extra: Any,
) -> RequestRecord:
    """One streaming `/v1/completions` request (aiohttp session); tokens counted from the
    per-chunk usage (`stream_options.continuous_usage_stats`)."""
    body = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        **extra,
    }
    record = RequestRecord(sent=time.perf_counter())
    seen = 0
    try:
        async with session.post(f"{base_url}/v1/completions", json=body) as response:
            if response.status != 200:
                record.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return record
            async for now, chunk in sse_chunks(response):
                usage = chunk.get("usage") or {}
                total = int(usage.get("completion_tokens") or 0)
                if total > seen and chunk.get("choices"):
                    record.observe(now, total - seen)
                    seen = total
    except Exception as exc:  # a benchmark records failures instead of stopping
        record.error = f"{type(exc).__name__}: {exc}"
    return record


async def engine_grpc_stream(
    stub: Any, prompt_ids: Sequence[int], max_tokens: int, **sampling: Any
) -> RequestRecord:
    """One Generate call on a scaleserve engine (an `EngineStub` on a shared channel)."""
    from scaleserve.engine.proto import engine_pb2

    request = engine_pb2.GenerateRequest(
        prompt_token_ids=engine_pb2.TokenIds(ids=list(prompt_ids)),
        sampling=engine_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, **sampling),
    )
    record = RequestRecord(sent=time.perf_counter())
    try:
        async for message in stub.Generate(request):
            record.observe(time.perf_counter(), len(message.token_ids))
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    return record


# --- output ----------------------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
