"""Scale from zero at the gateway: with no engine, requests are held (and counted in /stats),
not failed; an engine that starts and is discovered serves them all in arrival order, with no
client retry. Beyond the hold's bound: 503 with Retry-After; a client that leaves is dropped."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.engines import START_TIMEOUT_S, EngineLauncher
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess

pytestmark = pytest.mark.gateway

HELD = 4
# Served one at a time, each answer takes this many engine steps (about a second on these
# machines): far longer than a busy machine delays a client thread noting its completion, so
# the completion order the clients see is the order the gateway served them in.
TOKENS = 500


def wait_held(gw: GatewayProcess, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (held := gw.stats()["held"]) != n:
        assert time.monotonic() < deadline, f"{held} requests held, expected {n}"
        time.sleep(0.05)


def ask(gw: GatewayProcess, i: int) -> tuple[int, float, float, str | None]:
    """Request `i` (streamed chat or a plain completion, alternately), with no client retry:
    (i, when it was sent, when its answer was complete, its finish reason)."""
    sent = time.monotonic()
    long = {"ignore_eos": True}  # every answer takes TOKENS steps
    with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=900) as client:
        if i % 2:
            finish = None
            for chunk in client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=TOKENS,
                stream=True,
                extra_body=long,
            ):
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
        else:
            answer = client.completions.create(
                model=MODEL, prompt=f"request {i}", max_tokens=TOKENS, extra_body=long
            )
            finish = answer.choices[0].finish_reason
    return i, sent, time.monotonic(), finish


def test_held_requests_are_served_in_arrival_order_once_an_engine_is_up(
    gateway_factory: GatewayFactory,
    engine_launcher: EngineLauncher,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    replicas_file = tmp_path / "replicas"
    replicas_file.write_text("")
    # One request served at a time: once released, the held requests pass admission one by
    # one in the order they were released, so their completions show that order.
    gw = gateway_factory(
        [],
        "--replicas-file", str(replicas_file),
        "--served-models", MODEL,
        "--max-concurrency", "1",
        "--queue-timeout", "300",
        "--hold-timeout", str(START_TIMEOUT_S + 120),
    )  # fmt: skip
    with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == [MODEL]  # no replica at all
    with ThreadPoolExecutor(HELD) as pool:
        asked: list[Future[tuple[int, float, float, str | None]]] = []
        for i in range(HELD):
            asked.append(pool.submit(ask, gw, i))
            wait_held(gw, i + 1)  # held before the next is sent: the arrival order is known
        stats = gw.stats()
        assert (stats["held"], stats["in_flight"], stats["queued"]) == (HELD, 0, 0)
        metrics = httpx.get(gw.internal_url + "/metrics", timeout=15).text
        assert f"scaleserve_gateway_held {float(HELD)}" in metrics
        engine = engine_launcher.start(tiny_model_dir, name="cold-start")
        try:
            replicas_file.write_text(engine.address + "\n")  # discovery lists it, still starting
            answers = [a.result(timeout=START_TIMEOUT_S + 180) for a in asked]
        finally:
            engine.stop()
    assert [finish for *_, finish in answers] == ["length"] * HELD  # none failed
    by_completion = sorted(answers, key=lambda a: a[2])
    assert [i for i, *_ in by_completion] == list(range(HELD)), by_completion
    for i, sent, done, _ in answers:
        print(f"request {i}: held from the start, answered after {done - sent:.1f}s")
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
