"""Losing an engine replica under load on the local stack (a static 2 x TP1 endpoint).

One engine process is killed (SIGKILL) while 16 streaming clients run. Requests that had not
started go to the other replica; those streaming from the dead one end with the gateway's SSE
error event (never a cut connection or a silently short stream); the pod shows the crash
(restartCount, lastState terminated) and the runner restarts the process after the kubelet's
back-off; the restarted replica takes traffic again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from e2e.local.endpoints import (
    apply_endpoint,
    container_pid,
    engine_metric,
    engine_requests_total,
    pod_ready,
)
from e2e.local.host import LocalStack
from e2e.local.layout import wait_until
from e2e.local.load import Load
from scaleserve.dev.translate import ENGINE_NICE
from scaleserve.dev.watch import wait_endpoint_ready

pytestmark = pytest.mark.e2e
log = logging.getLogger("e2e")

CLIENTS = 16
COMEBACK_CLIENTS = 4
# long enough that a stream spends most of its time receiving tokens, not waiting for the first
MAX_TOKENS = 192
RUNNING = "vllm:num_requests_running"
START_TIMEOUT_S = 600.0
COMEBACK_TIMEOUT_S = 480.0


@pytest.mark.timeout(1200)
@pytest.mark.asyncio
async def test_killed_engine_fails_only_its_streams_cleanly_and_comes_back(
    local_stack: LocalStack,
) -> None:
    ep = await asyncio.to_thread(
        apply_endpoint,
        local_stack.client,
        local_stack.model_dir,
        "loss",
        {"autoscaling": None, "layout": {"replicas": 2, "tensorParallel": 1}},
    )
    try:
        await asyncio.to_thread(
            wait_endpoint_ready, ep.client, ep.namespace, ep.name, START_TIMEOUT_S, log.info
        )
        engines = sorted(await asyncio.to_thread(ep.pods, "engine"), key=lambda p: p.metadata.name)
        assert len(engines) == 2
        assert all(pod_ready(p) for p in engines)
        victim = engines[0]
        victim_ip, victim_pid = victim.status.pod_ip, container_pid(victim)
        # engines yield the CPU to the gateway and the clients once Ready (not while starting)
        assert os.getpriority(os.PRIO_PROCESS, victim_pid) == ENGINE_NICE

        async with Load(ep.gateway_url(), max_tokens=MAX_TOKENS) as load:
            await load.set_clients(CLIENTS)
            await asyncio.sleep(8)
            # kill while the victim is generating for several streams (a kill between two
            # batches would only exercise the retry before output)
            await wait_until(
                lambda: engine_metric(victim_ip, RUNNING) >= 3,
                "streams running on the victim",
                60.0,
                interval_s=0.05,
            )
            killed = time.monotonic()
            os.kill(victim_pid, signal.SIGKILL)
            await asyncio.sleep(10)
            # The restart imports torch and vLLM in three processes; a lighter load while it does
            # keeps the comeback to about a minute on 2 cores (minutes at full load).
            await load.set_clients(COMEBACK_CLIENTS)

            def crashed_and_restarted() -> bool:
                pod = next(p for p in ep.pods("engine") if p.metadata.name == victim.metadata.name)
                cs = pod.status.container_statuses[0]
                return bool(cs.restart_count >= 1 and cs.last_state.terminated and pod_ready(pod))

            back = await wait_until(
                crashed_and_restarted, "the killed engine back", COMEBACK_TIMEOUT_S
            )
            pod = next(p for p in ep.pods("engine") if p.metadata.name == victim.metadata.name)
            assert pod.status.pod_ip == victim_ip
            assert os.getpriority(os.PRIO_PROCESS, container_pid(pod)) == ENGINE_NICE
            terminated = pod.status.container_statuses[0].last_state.terminated
            assert terminated.exit_code == 137, terminated

            await wait_until(
                lambda: engine_requests_total(victim_ip) >= 5,
                "the restarted engine to take traffic",
                120.0,
            )
            await load.set_clients(0, wait=True)

        counts = load.counts()
        print(f"\nreplica loss: back after {back - killed:.1f}s; requests: {dict(counts)}")
        assert load.problems() == [], load.problems()[:5]
        events = load.problems(kinds=("error_event",))
        assert events, "streams in flight on the killed replica should end with an error event"
        # only streams that were running when the process died may fail
        assert all(o.started <= killed + 1.0 for o in events), events
        assert counts["complete"] > 4 * len(events)
    finally:
        await asyncio.to_thread(ep.delete)
