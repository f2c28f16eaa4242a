"""Streaming load against an OpenAI-compatible endpoint: per-request timings from the SSE
frames, a closed loop of clients, percentile summaries. Shared by `scaleserve profile` (load
sweeps) and the benchmarks (benchmarks/common.py).

Definitions:
- TTFT: from sending the request to receiving the first token.
- TBT (time between tokens): per stream message after the first, the gap since the previous
  message divided by the tokens it carries, counted once per token (`RequestRecord.observe`);
  `openai_stream_by_frames` records each stream's mean time between tokens instead (see there).
- Output tokens/s: all tokens received during a run divided by its wall time.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    sent: float = 0.0
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    messages: int = 0
    tbt: list[float] = field(default_factory=list)
    error: str = ""
    frame_gaps: list[float] = field(default_factory=list)  # openai_stream_by_frames only

    def observe(self, now: float, n_tokens: int) -> None:
        """Record a stream message carrying `n_tokens` tokens, received at `now`."""
        if n_tokens <= 0:
            return
        if self.first is None:
            self.first = now
        elif self.last is not None:
            gap = (now - self.last) / n_tokens
            self.tbt.extend([gap] * n_tokens)
        self.last = now
        self.tokens += n_tokens
        self.messages += 1

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(records: Sequence[RequestRecord], wall_s: float) -> dict[str, Any]:
    ok = [r for r in records if not r.error]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    tbts = [gap for r in ok for gap in r.tbt]
    tokens = sum(r.tokens for r in ok)
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "output_tokens": tokens,
        "wall_s": round(wall_s, 3),
        "ttft_p50_ms": round(percentile(ttfts, 50) * 1e3, 2),
        "ttft_p99_ms": round(percentile(ttfts, 99) * 1e3, 2),
        "tbt_p50_ms": round(percentile(tbts, 50) * 1e3, 3),
        "tbt_p99_ms": round(percentile(tbts, 99) * 1e3, 3),
        "output_tokens_per_s": round(tokens / wall_s, 1) if wall_s > 0 else math.nan,
        "tokens_per_message": round(tokens / max(1, sum(r.messages for r in ok)), 2),
    }


async def sse_chunks(response: Any) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """The JSON chunks of an OpenAI stream (an aiohttp response's SSE `data:` lines) up to
    `[DONE]`, each with the time it was read."""
    import orjson

    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        yield time.perf_counter(), orjson.loads(data)


async def openai_stream_by_frames(
    session: Any,
    url: str,
    body: dict[str, Any],
    timeout_s: float | None = None,
) -> RequestRecord:
    """One streaming OpenAI request (aiohttp session, `url` the full endpoint), timed from the
    SSE frames alone, so that it measures any OpenAI-compatible server the same way.

    Needs only `stream_options.include_usage` (the closing usage frame), not per-chunk usage:
    each frame that carries text is one stream message, and the closing `completion_tokens` is
    the request's token count. TTFT ends at the first text frame. TBT is the stream's mean time
    between tokens, (last text frame - first) / (tokens - 1), recorded once per token after the
    first: a frame's own token count is not in the frame, and a client that shares its CPU with
    the servers reads several frames in one wake-up, so single gaps measure the client's
    scheduling more than the server. The raw gaps between text frames are kept in
    `frame_gaps`. Body keys are sent as given (set `stream` and `stream_options`). A request
    still running after `timeout_s` is abandoned with error "timeout".
    """
    record = RequestRecord(sent=time.perf_counter())
    frames = _Frames()
    try:
        if timeout_s is None:
            await frames.read(session, url, body, record)
        else:
            async with asyncio.timeout(timeout_s):
                await frames.read(session, url, body, record)
    except TimeoutError:
        record.error = "timeout"
    except Exception as exc:  # a benchmark records failures instead of stopping
        record.error = f"{type(exc).__name__}: {exc}"
    if not record.error:
        frames.time(record)
    return record


@dataclass
class _Frames:
    """What `openai_stream_by_frames` reads of a stream: when each text frame arrived, and the
    closing usage frame's token count."""

    arrivals: list[float] = field(default_factory=list)
    usage_tokens: int = 0

    async def read(
        self, session: Any, url: str, body: dict[str, Any], record: RequestRecord
    ) -> None:
        """Read the response's frames; an HTTP or in-stream error goes to `record.error`."""
        async with session.post(url, json=body) as response:
            if response.status != 200:
                record.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return
            async for now, chunk in sse_chunks(response):
                if "error" in chunk:
                    record.error = f"stream error: {str(chunk['error'])[:200]}"
                    return
                choices = chunk.get("choices") or ()
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta")
                    text = delta.get("content") if delta is not None else choice.get("text")
                    if text:
                        self.arrivals.append(now)
                usage = chunk.get("usage")
                if usage:
                    self.usage_tokens = int(usage.get("completion_tokens") or 0)

    def time(self, record: RequestRecord) -> None:
        """Fill in the record's timings from the frames (see `openai_stream_by_frames`)."""
        arrivals = self.arrivals
        if not arrivals:
            record.error = "no text frames in the stream"
            return
        tokens = max(self.usage_tokens, len(arrivals))
        record.first = arrivals[0]
        record.last = arrivals[-1]
        record.messages = len(arrivals)
        record.tokens = tokens
        record.frame_gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        if tokens > 1:
            record.tbt = [(record.last - record.first) / (tokens - 1)] * (tokens - 1)


async def closed_loop_for(
    send: Callable[[int], Awaitable[RequestRecord]], concurrency: int, duration_s: float
) -> tuple[list[RequestRecord], float]:
    """`concurrency` clients send requests back to back; none starts after `duration_s`.
    Returns the records and the wall time until the last one ended."""
    records: list[RequestRecord] = []
    counter = itertools.count()
    start = time.perf_counter()
    deadline = start + duration_s

    async def client() -> None:
        while time.perf_counter() < deadline:
            records.append(await send(next(counter)))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return records, time.perf_counter() - start


async def open_loop_at(
    send: Callable[[int], Awaitable[RequestRecord]], offsets: Sequence[float]
) -> tuple[list[RequestRecord], float]:
    """Request i is sent `offsets[i]` seconds (ascending) after the start, whatever is still
    running (an open loop). Returns the records in that order, each `sent` when it really
    was, and the wall time until the last one ended."""
    start = time.perf_counter()
    tasks: list[asyncio.Future[RequestRecord]] = []
    for index, offset in enumerate(offsets):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(index)))
    records = await asyncio.gather(*tasks)
    return list(records), time.perf_counter() - start
