"""Scale from zero at the gateway: with no engine, requests are held (and counted in /stats),
not failed; an engine that starts and is discovered serves them all in arrival order, with no
client retry. Beyond the hold's bound: 503 with Retry-After; a client that leaves is dropped."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.engines import START_TIMEOUT_S, EngineLauncher
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess

pytestmark = pytest.mark.gateway

HELD = 4
# Served one at a time, each answer takes this many engine steps (about a second on these
# machines): the next request's first token comes that long after the previous one's.
TOKENS = 500


def wait_held(gw: GatewayProcess, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (held := gw.stats()["held"]) != n:
        assert time.monotonic() < deadline, f"{held} requests held, expected {n}"
        time.sleep(0.05)


async def ask(client: httpx.AsyncClient, gw: GatewayProcess, i: int) -> tuple[int, float, Any]:
    """Request `i`, streamed (a chat or a plain completion, alternately): (i, when its first
    frame arrived, its finish reason). One event loop reads every stream and parses only the
    last frame: a client thread parsing each chunk would fall seconds behind the gateway on a
    busy machine (and delay the other clients' threads), blurring the order."""
    path, prompt = (
        ("/chat/completions", {"messages": [{"role": "user", "content": f"request {i}"}]})
        if i % 2
        else ("/completions", {"prompt": f"request {i}"})
    )
    body = {"model": MODEL, **prompt, "max_tokens": TOKENS, "ignore_eos": True, "stream": True}
    first, last = 0.0, ""
    async with client.stream("POST", gw.base_url + path, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                first = first or time.monotonic()
                last = line
    return i, first, json.loads(last[6:])["choices"][0]["finish_reason"]


@pytest.mark.asyncio
async def test_held_requests_are_served_in_arrival_order_once_an_engine_is_up(
    gateway_factory: GatewayFactory,
    engine_launcher: EngineLauncher,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    replicas_file = tmp_path / "replicas"
    replicas_file.write_text("")
    # One request served at a time: once released, the held requests pass admission one by
    # one in the order they were released, so their first tokens show that order.
    gw = gateway_factory(
        [],
        "--replicas-file", str(replicas_file),
        "--served-models", MODEL,
        "--max-concurrency", "1",
        "--queue-timeout", "300",
        "--hold-timeout", str(START_TIMEOUT_S + 120),
    )  # fmt: skip
    with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as openai_client:
        assert [m.id for m in openai_client.models.list()] == [MODEL]  # no replica at all
    async with httpx.AsyncClient(timeout=900) as client:  # httpx does not retry
        asked = []
        for i in range(HELD):
            asked.append(asyncio.create_task(ask(client, gw, i)))
            # held before the next is sent: the arrival order is known
            await asyncio.to_thread(wait_held, gw, i + 1)
        stats = gw.stats()
        assert (stats["held"], stats["in_flight"], stats["queued"]) == (HELD, 0, 0)
        metrics = (await client.get(gw.internal_url + "/metrics")).text
        assert f"scaleserve_gateway_held {float(HELD)}" in metrics
        engine = engine_launcher.start(tiny_model_dir, name="cold-start")
        try:
            replicas_file.write_text(engine.address + "\n")  # discovery lists it, still starting
            async with asyncio.timeout(START_TIMEOUT_S + 180):
                answers = await asyncio.gather(*asked)
        finally:
            engine.stop()
    assert [finish for *_, finish in answers] == ["length"] * HELD  # none failed
    by_first_token = sorted(answers, key=lambda a: a[1])
    assert [i for i, *_ in by_first_token] == list(range(HELD)), by_first_token
    firsts = [first for _, first, _ in by_first_token]
    print("seconds between first tokens:", [round(b - a, 2) for a, b in pairwise(firsts)])
    assert gw.stats()["held"] == 0


def send_raw(gw: GatewayProcess) -> socket.socket:
    """A completion request on a connection the test keeps (closing it is the client leaving)."""
    body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 2}).encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=60)
    sock.sendall(head.encode() + body)
    return sock


def test_beyond_the_hold_bound_a_503_and_a_client_that_leaves_is_dropped(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory([], "--served-models", MODEL, "--max-held", "2")
    first = send_raw(gw)
    wait_held(gw, 1)
    second = send_raw(gw)
    wait_held(gw, 2)
    try:
        with (
            openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as client,
            pytest.raises(openai.InternalServerError) as refused,
        ):
            client.completions.create(model=MODEL, prompt="one too many", max_tokens=2)
        assert refused.value.status_code == 503
        assert refused.value.code == "no_replica_available"  # type: ignore[attr-defined]
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert gw.stats()["held"] == 2
        first.close()  # the client leaves while held
        wait_held(gw, 1, timeout_s=30)
    finally:
        first.close()
        second.close()
    wait_held(gw, 0, timeout_s=30)
