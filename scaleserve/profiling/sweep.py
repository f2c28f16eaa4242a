"""`scaleserve profile --url ...`: a profile measured by a load sweep against a running
OpenAI-compatible endpoint (a scaleserve gateway, or any server speaking `/v1/completions`).

At each level, `concurrency x replicas` clients in a closed loop send streaming completions
of `inputTokens` prompt token ids (drawn at random per request, so no two share a cached
prefix) and exactly `outputTokens` output tokens (`ignore_eos`) for `duration` seconds; no
request starts after that, and the level ends when the last one has. A level's point holds
TTFT and time-between-tokens p50/p99 (`scaleserve.profiling.load`'s definitions: a stream's TBT
is its mean time between tokens) and output tokens/s divided by the replica count, which is
read from the gateway's /stats (replicas taking work; on the gateway's internal port, 8001 by
default, not the API port) unless given.
"""

from __future__ import annotations

import datetime
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from scaleserve.gateway.settings import GatewaySettings
from scaleserve.profiles import API_VERSION, KIND, Profile, parse_profile
from scaleserve.profiling.load import RequestRecord, closed_loop_for, openai_stream_by_frames
from scaleserve.profiling.load import summarize as summarize_records

TOOL = "scaleserve profile"
# a level whose requests fail more often than this measures the failures, not the engine
MAX_ERROR_SHARE = 0.05


class SweepError(RuntimeError):
    """The endpoint could not be measured (unreachable, or too many failed requests)."""


@dataclass(frozen=True)
class SweepRequest:
    url: str  # the endpoint's root, e.g. http://127.0.0.1:8000
    concurrencies: tuple[int, ...]  # requests in flight per replica
    duration_s: float
    input_tokens: int
    output_tokens: int
    gpu: str
    engine: str
    startup_seconds: float
    model: str | None = None  # None: the first model the endpoint lists
    replicas: int | None = None  # None: from the gateway's /stats
    tensor_parallel: int | None = None  # None: from the gateway's /stats, else 1
    token_ids: tuple[int, int] = (10, 250)  # prompt token ids are drawn from this range
    request_timeout_s: float = 300.0
    stats_url: str | None = None  # None: /stats on the URL's host at the gateway's internal port


@dataclass(frozen=True)
class Shape:
    """What the endpoint serves: the model and its replicas."""

    model: str
    replicas: int
    tensor_parallel: int


def base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def stats_url(request: SweepRequest) -> str:
    if request.stats_url:
        return request.stats_url
    parts = urlsplit(base_url(request.url))
    port = GatewaySettings.model_fields["internal_port"].default
    return f"{parts.scheme}://{parts.hostname}:{port}/stats"


def shape_from(
    request: SweepRequest, models: dict[str, Any], stats: dict[str, Any] | None
) -> Shape:
    """The endpoint's shape from its /v1/models and /stats answers (None: no /stats), the
    request's explicit values winning."""
    listed = [m["id"] for m in models.get("data", [])]
    model = request.model or (listed[0] if listed else None)
    if not model:
        raise SweepError("the endpoint lists no model; pass --model")
    serving = [r for r in (stats or {}).get("replicas", []) if r.get("serving")]
    replicas = request.replicas or len(serving)
    if not replicas:
        raise SweepError(
            "no replica count: the endpoint has no /stats serving replicas; pass --replicas"
        )
    degrees = {int(r.get("tensor_parallel", 1)) for r in serving}
    tp = request.tensor_parallel or (degrees.pop() if len(degrees) == 1 else 1)
    return Shape(model, replicas, tp)


def point_from(summary: dict[str, Any], concurrency: int, replicas: int) -> dict[str, Any]:
    """One profile point (the format's fields) from `load.summarize`'s figures of one level."""
    if summary["requests"] == 0 or summary["errors"] > MAX_ERROR_SHARE * summary["requests"]:
        raise SweepError(
            f"concurrency {concurrency}: {summary['errors']} of {summary['requests']} requests "
            f"failed{': ' + summary['error_sample'] if summary.get('error_sample') else ''}"
        )
    figures = ("ttft_p50_ms", "tbt_p50_ms", "ttft_p99_ms", "tbt_p99_ms", "output_tokens_per_s")
    if any(not math.isfinite(summary[k]) or summary[k] <= 0 for k in figures):
        raise SweepError(f"concurrency {concurrency}: no timings measured ({summary})")
    return {
        "concurrency": concurrency,
        "ttftMs": summary["ttft_p50_ms"],
        "tbtMs": summary["tbt_p50_ms"],
        "ttftP99Ms": summary["ttft_p99_ms"],
        "tbtP99Ms": summary["tbt_p99_ms"],
        "outputTokensPerS": round(summary["output_tokens_per_s"] / replicas, 1),
    }


def profile_from(request: SweepRequest, shape: Shape, points: list[dict[str, Any]]) -> Profile:
    notes = (
        f"closed loop of concurrency x {shape.replicas} replica(s) for {request.duration_s:g} s "
        f"per level against {request.url}; TBT per stream is its mean time between tokens; "
        "tokens/s per replica"
    )
    return parse_profile(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "model": shape.model,
            "gpu": request.gpu,
            "engine": request.engine,
            "workload": {
                "inputTokens": request.input_tokens,
                "outputTokens": request.output_tokens,
            },
            "provenance": {
                "source": "sweep",
                "tool": TOOL,
                "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
                "notes": notes,
            },
            "tensorParallel": [
                {
                    "tensorParallel": shape.tensor_parallel,
                    "startupSeconds": request.startup_seconds,
                    "points": points,
                }
            ],
        }
    )


def request_body(request: SweepRequest, model: str, index: int) -> dict[str, Any]:
    rng = random.Random(index)
    low, high = request.token_ids
    return {
        "model": model,
        "prompt": [rng.randint(low, high) for _ in range(request.input_tokens)],
        "max_tokens": request.output_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _get_json(session: Any, url: str) -> dict[str, Any] | None:
    async with session.get(url) as response:
        return await response.json() if response.status == 200 else None


async def _stats(session: Any, request: SweepRequest) -> dict[str, Any] | None:
    """The gateway's /stats, or None where nothing answers there (another server)."""
    import aiohttp

    try:
        return await _get_json(session, stats_url(request))
    except aiohttp.ClientError:
        if request.stats_url:
            raise
        return None


async def run_sweep(request: SweepRequest, progress: Any = None) -> Profile:
    """Measure every level in turn (after one warm-up request) and return the profile.
    `progress(concurrency, summary)` is called after each level."""
    import aiohttp

    root = base_url(request.url)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        try:
            models = await _get_json(session, root + "/v1/models") or {}
            stats = await _stats(session, request)
        except aiohttp.ClientError as exc:
            raise SweepError(f"{root} does not answer: {exc}") from None
        shape = shape_from(request, models, stats)
        url = root + "/v1/completions"

        # One numbering across the warm-up and every level: each level's loop counts from 0, and
        # reusing its indices would send later levels prompts the prefix cache already holds.
        numbers = itertools.count()

        async def send(_: int) -> RequestRecord:
            body = request_body(request, shape.model, next(numbers))
            return await openai_stream_by_frames(session, url, body, request.request_timeout_s)

        warm = await send(0)  # the first request may pay for compilation or caches
        if warm.error:
            raise SweepError(f"the warm-up request failed: {warm.error}")
        points: list[dict[str, Any]] = []
        for concurrency in request.concurrencies:
            clients = concurrency * shape.replicas
            records, wall = await closed_loop_for(send, clients, request.duration_s)
            summary = summarize_records(records, wall)
            errors = sorted({r.error for r in records if r.error})
            if errors:
                summary["error_sample"] = errors[0][:200]
            if progress is not None:
                progress(concurrency, summary)
            points.append(point_from(summary, concurrency, shape.replicas))
    return profile_from(request, shape, points)
