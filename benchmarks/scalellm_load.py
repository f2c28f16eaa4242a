"""The ScaleLLM comparison's load: the requests, the closed loop at one level, pooled figures.

At each concurrency level N clients in a closed loop send streaming `/v1/completions` requests
(text prompts, greedy, `ignore_eos`, a fixed number of output tokens); the stacks take turns
in an order that rotates from level to level and repeat to repeat (`turn_order`), and a level's
row pools its repeats (`pooled_row`). Only `measure` does I/O.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.common import RequestRecord, openai_stream_by_frames, percentile, summarize
from benchmarks.stacks import SERVED_NAME, Stack

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


def requests_for(concurrency: int, rounds: int, min_requests: int) -> int:
    """Requests at one level: `rounds` per client, at least `min_requests`."""
    return max(min_requests, concurrency * rounds)


def turn_order(labels: list[str], turn: int) -> list[str]:
    """The stacks' order at one turn (level index + repeat): rotated by one per turn."""
    if not labels:
        return []
    shift = turn % len(labels)
    return labels[shift:] + labels[:shift]


def prompt(index: int) -> str:
    return f"{index}: " + " ".join(SENTENCES[(index + k) % len(SENTENCES)] for k in range(2))


def request_body(index: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": SERVED_NAME,
        "prompt": prompt(index),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclass
class Run:
    """One closed-loop run of one stack at one level: its records, wall time and CPU use."""

    records: list[RequestRecord]
    wall_s: float
    front_cpu_s: float
    stack_cpu_s: float
    load1: float


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
    stack: Stack,
    session: Any,
    concurrency: int,
    total: int,
    max_tokens: int,
    request_timeout: float,
) -> Run:
    """`total` requests from `concurrency` clients in a closed loop against `stack`."""
    url = stack.base_url + "/v1/completions"
    records: list[RequestRecord] = []
    counter = iter(range(total))

    async def client() -> None:
        for index in counter:
            body = request_body(index, max_tokens)
            records.append(await openai_stream_by_frames(session, url, body, request_timeout))

    front0, total0 = stack.cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    front1, total1 = stack.cpu_seconds()
    return Run(records, wall, front1 - front0, total1 - total0, os.getloadavg()[0])
