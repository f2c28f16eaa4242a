"""Reshape under load on the local stack: 1 x TP2 <-> 2 x TP1 with real engines, no lost request.

The load ramps from 1 to 64 concurrent streaming clients and back. The operator reads the
gateway's /stats, moves the endpoint to 2 x TP1 (make-before-break: the new group starts on
the second node, then the TP2 group drains away) and back to 1 x TP2. Every request must
complete: no failure, no truncated stream, no error event. The time from the load crossing a
threshold to the new layout serving in the gateway is printed and recorded as a property.

Two more clients send long generations (ignore_eos, LONG_TOKENS tokens) back to back through
the way up: they start on the TP2 group, which is retired while they run; with the default
drain settings each must still complete (the group is deleted only once the gateway reports
nothing in flight on it). The longest one is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from e2e.local.endpoints import apply_endpoint
from e2e.local.host import LocalStack
from e2e.local.layout import wait_gateway_serves, wait_status, wait_until
from e2e.local.load import Load
from scaleserve.dev.watch import wait_endpoint_ready

pytestmark = pytest.mark.e2e
log = logging.getLogger("e2e")

THRESHOLD = 8.0
HYSTERESIS = 0.5  # back to TP2 below 4: 64 closed-loop clients must never look like 6
RAMP = (1, 2, 4, 8, 16, 32, 64)
STEP_S = 3.0
# the operator's default bound on a retired group's drain (spec.rollout.drainSeconds)
DRAIN_BOUND_S = 600
LONG_TOKENS = 1900  # within the context of 2048 with the prompt
LONG_CLIENTS = 2
START_TIMEOUT_S = 600.0
# from the end of the ramp; it covers the operator's window and cooldown, the load crossing
# the threshold as the gateway measures it (closed-loop clients share the CPU with the
# engines) and the new group's start-up, which takes minutes when the machine is busy
RESHAPE_TIMEOUT_S = 900.0


@pytest.mark.timeout(3000)
@pytest.mark.asyncio
async def test_reshape_under_load_both_ways_loses_no_request(
    local_stack: LocalStack, record_property: pytest.RecordProperty
) -> None:
    ep = await asyncio.to_thread(
        apply_endpoint,
        local_stack.client,
        local_stack.model_dir,
        "reshape",
        {
            "autoscaling": {"concurrencyThresholds": [THRESHOLD], "hysteresis": HYSTERESIS},
            "engine": {"maxModelLen": 2048},  # room for the long generations
        },
    )
    try:
        await asyncio.to_thread(
            wait_endpoint_ready, ep.client, ep.namespace, ep.name, START_TIMEOUT_S, log.info
        )
        assert ep.status()["currentLayout"] == "1x2"
        # long streams: a client's own overhead between requests stays small next to them, so the
        # gateway sees about as many requests in flight as there are clients
        long = Load(
            ep.gateway_url(), max_tokens=LONG_TOKENS, ignore_eos=True, request_timeout_s=900.0
        )
        async with Load(ep.gateway_url(), max_tokens=64) as load, long:
            await long.set_clients(LONG_CLIENTS)
            await load.set_clients(1)
            await asyncio.sleep(5)
            crossed_up = 0.0
            for clients in RAMP:
                await load.set_clients(clients)
                if clients >= THRESHOLD and not crossed_up:
                    crossed_up = time.monotonic()
                await asyncio.sleep(STEP_S)
            up_serving = await wait_gateway_serves(ep, 1, 2, RESHAPE_TIMEOUT_S)
            # the old group goes once its requests are done: the long ones included
            up_done = await wait_status(ep, "2x1", RESHAPE_TIMEOUT_S + DRAIN_BOUND_S)
            await long.set_clients(0, wait=True)
            log.info("at 2x1: %s; problems %s", dict(load.counts()), load.problems()[:3])
            # the way back is make-before-break too once the old group's pod is gone
            await wait_until(lambda: len(ep.pods("engine")) == 2, "old TP2 pod gone", 120.0)

            crossed_down = 0.0
            for clients in reversed(RAMP[:-1]):
                await load.set_clients(clients)
                if clients < THRESHOLD * (1 - HYSTERESIS) and not crossed_down:
                    crossed_down = time.monotonic()
                await asyncio.sleep(STEP_S)
            down_serving = await wait_gateway_serves(ep, 2, 1, RESHAPE_TIMEOUT_S)
            down_done = await wait_status(ep, "1x2", RESHAPE_TIMEOUT_S)
            log.info("at 1x2: %s; problems %s", dict(load.counts()), load.problems()[:3])
            await load.set_clients(0, wait=True)

        figures = {
            "up_threshold_to_serving_s": round(up_serving - crossed_up, 1),
            "up_threshold_to_done_s": round(up_done - crossed_up, 1),
            "down_threshold_to_serving_s": round(down_serving - crossed_down, 1),
            "down_threshold_to_done_s": round(down_done - crossed_down, 1),
        }
        longest = max(
            (o.ended - o.started for o in long.outcomes if o.kind == "complete"), default=0
        )
        figures["longest_generation_s"] = round(longest, 1)
        counts = load.counts()
        for key, value in {**figures, **counts}.items():
            record_property(key, value)
        print(f"\nreshape under load: {figures}; requests: {dict(counts)}")
        print(f"long generations: {dict(long.counts())}")
        kinds = ("failed", "truncated", "error_event")
        problems = load.problems(kinds=kinds) + long.problems(kinds=kinds)
        assert problems == [], f"{len(problems)} request(s) did not complete: {problems[:5]}"
        assert long.counts()["complete"] >= LONG_CLIENTS
        assert counts["complete"] >= 100
    finally:
        await asyncio.to_thread(ep.delete)
