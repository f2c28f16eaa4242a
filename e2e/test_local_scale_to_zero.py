"""Scale to zero and back on the local stack (objectives mode, minGPUs 0).

An endpoint sized by a latency objective from the tiny model's CPU profile, with no load,
removes its engine group after scaleToZeroAfterSeconds; the gateway stays. Requests sent then
are held by the gateway (reported as `held` on its /stats), the operator brings a group up from
that signal, and every held request is answered once the engine is Ready: none fails and none
needs a client retry. The time to first token of the first request (a cold start) is printed
and recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import openai
import pytest
import yaml

from e2e.local.endpoints import apply_endpoint
from e2e.local.host import LocalStack
from e2e.local.layout import wait_until

pytestmark = pytest.mark.e2e
log = logging.getLogger("e2e")

PROFILE = Path(__file__).parents[1] / "profiles" / "tiny.cpu.yaml"
IDLE_S = 15
REQUESTS = 3
START_TIMEOUT_S = 600.0


async def first_token_after(client: openai.AsyncOpenAI, sent: float) -> tuple[float, str]:
    """(seconds from `sent` to the first token, finish reason) of one streamed completion."""
    stream = await client.completions.create(
        model="tiny-llama", prompt="hello", max_tokens=16, stream=True
    )
    first, finish = 0.0, ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text and not first:
            first = time.monotonic() - sent
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return first, finish


@pytest.mark.timeout(1500)
@pytest.mark.asyncio
async def test_idle_endpoint_scales_to_zero_and_serves_held_requests_on_the_way_back(
    local_stack: LocalStack, record_property: pytest.RecordProperty
) -> None:
    autoscaling = {
        "mode": "objectives",
        "objectives": {"ttftP50Ms": 2000},
        "minGPUs": 0,
        "maxGPUs": 1,
        "tensorParallelCandidates": [1],
        "profile": {"inline": yaml.safe_load(PROFILE.read_text())},
        "scaleToZeroAfterSeconds": IDLE_S,
        "windowSeconds": 5,
        "cooldownSeconds": 10,
        "gpuBudget": None,
        "concurrencyThresholds": None,
    }
    ep = await asyncio.to_thread(
        apply_endpoint,
        local_stack.client,
        local_stack.model_dir,
        "zero",
        {"autoscaling": autoscaling},
    )
    try:

        def idle() -> bool:
            status = ep.status()
            log.info("zero: %s %s - %s", status.get("phase"), status.get("currentLayout"),
                     status.get("message"))  # fmt: skip
            return status.get("phase") == "Idle" and not ep.pods("engine")

        await wait_until(idle, "the endpoint scaled to zero", START_TIMEOUT_S, interval_s=1.0)
        assert ep.pods("gateway"), "the gateway stays while the endpoint is at zero"

        client = openai.AsyncOpenAI(
            base_url=ep.gateway_url(), api_key="none", max_retries=0, timeout=START_TIMEOUT_S
        )
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tiny-llama"]  # answered with no engine
        sent = time.monotonic()
        requests = [asyncio.create_task(first_token_after(client, sent)) for _ in range(REQUESTS)]
        await wait_until(lambda: ep.gateway_stats()["held"] == REQUESTS, "the requests held", 60.0)
        results = await asyncio.gather(*requests)
        await client.close()

        ttfts = sorted(first for first, _ in results)
        print(f"\nscale from zero: time to first token {', '.join(f'{t:.1f}s' for t in ttfts)}")
        record_property("scale_from_zero_ttft_s", round(ttfts[0], 1))
        assert [finish for _, finish in results] == ["length"] * REQUESTS
        assert all(t > 0 for t in ttfts)
        status = await asyncio.to_thread(ep.status)
        assert status.get("phase") != "Idle"
        assert await asyncio.to_thread(ep.pods, "engine")
        assert ep.gateway_stats()["held"] == 0
    finally:
        await asyncio.to_thread(ep.delete)
