"""Deadlines and models per replica, with real engines: a paused engine core (alive but making
no progress) gets its stream ended by the idle deadline and its unstarted requests retried on
another replica, and turns NOT_SERVING itself; a client that never sends its request is cut, and
one that stops reading is closed; two models behind one gateway each reach their own replicas."""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from scaleserve.engine.proto import engine_pb2
from tests.fixtures.engines import EngineLauncher, EngineProcess
from tests.gateway.conftest import (
    MODEL,
    GatewayFactory,
    GatewayProcess,
    engine_generate_text,
    engine_stats,
)

pytestmark = pytest.mark.gateway

OTHER_MODEL = "tiny-b"
STALL_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def other_engine(engine_launcher: EngineLauncher, tiny_model_dir: Path) -> EngineProcess:
    """The tiny model under a second served name, with a short engine watchdog."""
    return engine_launcher.launch(
        tiny_model_dir,
        "--served-name",
        OTHER_MODEL,
        "--stall-timeout",
        str(STALL_TIMEOUT_S),
        name="tiny-b",
    )


def requests_on(engines: list[EngineProcess]) -> list[int]:
    return [engine_stats(e.address).requests_total for e in engines]


def test_each_request_reaches_a_replica_of_its_model(
    gateway_factory: GatewayFactory, engine_replica: EngineProcess, other_engine: EngineProcess
) -> None:
    gw = gateway_factory([engine_replica, other_engine])
    engines = [engine_replica, other_engine]
    with openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as client:
        assert {m.id for m in client.models.list()} == {MODEL, OTHER_MODEL}
        before = requests_on(engines)
        for model, count in ((MODEL, 3), (OTHER_MODEL, 2)):
            for i in range(count):
                answer = client.completions.create(model=model, prompt=f"hello {i}", max_tokens=2)
                assert answer.model == model
        after = requests_on(engines)
        assert [a - b for a, b in zip(after, before, strict=True)] == [3, 2]
        with pytest.raises(openai.NotFoundError) as info:
            client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
        assert info.value.code == "model_not_found"  # type: ignore[attr-defined]


def test_a_paused_engine_turns_not_serving_within_its_stall_timeout(
    other_engine: EngineProcess,
) -> None:
    with ThreadPoolExecutor(1) as pool, other_engine.core_paused():
        held = pool.submit(engine_generate_text, other_engine.address, [1, 2, 3], 4)
        deadline = time.monotonic() + 60
        while engine_stats(other_engine.address).in_flight_requests < 1:
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.05)
        paused_at = time.monotonic()
        while other_engine.health().status != engine_pb2.HealthResponse.NOT_SERVING:
            assert time.monotonic() - paused_at < STALL_TIMEOUT_S + 30, "still SERVING"
            time.sleep(0.1)
        assert "stalled" in other_engine.health().message
        readyz = httpx.get(other_engine.metrics_url + "/readyz", timeout=10)
        assert readyz.status_code == 503
    assert held.result(timeout=120)  # resumed: the request finishes, nothing was lost
    assert other_engine.health().status == engine_pb2.HealthResponse.SERVING


@pytest.fixture(scope="module")
def strict(gateway_factory: GatewayFactory, engine_replica: EngineProcess) -> GatewayProcess:
    return gateway_factory([engine_replica], "--receive-timeout", "2", "--token-idle-timeout", "3")


def raw_exchange(gw: GatewayProcess, sent: bytes) -> bytes:
    """Send `sent` on a new connection, then nothing; what the gateway answers."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=60) as sock:
        sock.sendall(sent)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{",
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n",
    ],
    ids=["body-missing", "headers-unfinished"],
)
def test_a_request_that_never_arrives_is_cut_at_the_receive_deadline(
    strict: GatewayProcess, sent: bytes
) -> None:
    answer = raw_exchange(strict, sent)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "request_timeout"


def test_a_client_that_stops_reading_is_closed_at_the_write_deadline(
    gateway_factory: GatewayFactory, engine_replica: EngineProcess
) -> None:
    gw = gateway_factory([engine_replica], "--write-timeout", "3")
    # About 10 MB of frames (8 choices, 20 candidates a token), more than the kernel buffers
    # (4 MB at most for the gateway's socket here): its writes block on the unread socket.
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count from one to ten."}],
            "max_tokens": 1000,
            "n": 8,
            "logprobs": True,
            "top_logprobs": 20,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, unread
        sock.connect(("127.0.0.1", gw.port))
        sock.sendall(head + body)
        gw.wait_in_flight(1)
        deadline = time.monotonic() + 60  # the write deadline (3 s) once the writes block
        while gw.stats()["in_flight"]:
            assert time.monotonic() < deadline, gw.log_tail()
            time.sleep(0.1)
        freed_at = time.monotonic()
        while engine_stats(engine_replica.address).in_flight_requests:  # its engine request too
            assert time.monotonic() < freed_at + 30
            time.sleep(0.1)
        # Reset at once, the client still not reading: a graceful close would keep the
        # connection and what is queued for it until the client reads it all.
        while sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != errno.ECONNRESET:
            assert time.monotonic() < freed_at + 10, "the connection was not reset"
            time.sleep(0.1)
    assert "returned without completing" not in gw.log_tail()
    assert "client has not read for" in gw.log_tail()


def stream_frames(gw: GatewayProcess, started: threading.Event) -> list:
    frames: list = []
    payload = {
        "model": MODEL,
        "prompt": "Count from one to ten:",
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", gw.base_url + "/completions", json=payload, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                frames.append(data if data == "[DONE]" else json.loads(data))
                started.set()
    return frames


def test_a_stream_on_a_paused_core_ends_with_the_idle_timeout_error(
    strict: GatewayProcess, engine_replica: EngineProcess
) -> None:
    started = threading.Event()
    with ThreadPoolExecutor(1) as pool, engine_replica.core_paused():
        future = pool.submit(stream_frames, strict, started)
        strict.wait_in_flight(1)
        assert engine_replica.step_core_until(started.is_set), "the stream did not start"
        frames = future.result(timeout=120)  # the core stays paused: no token comes
    assert frames[-1] == "[DONE]"
    error = frames[-2]["error"]
    assert error["code"] == "token_idle_timeout"
    assert error["type"] == "server_error"
    deadline = time.monotonic() + 30  # the engine's request was aborted, not left running
    while engine_stats(engine_replica.address).in_flight_requests:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert strict.stats()["in_flight"] == 0
    # counted by how it ended (504), not by the 200 its stream had started with
    metrics = httpx.get(strict.internal_url + "/metrics", timeout=15).text
    assert 'scaleserve_gateway_requests_total{route="completions",status="504"} 1.0' in metrics
    assert 'status="200"' not in metrics


def test_a_request_without_a_first_token_is_retried_on_another_replica(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--routing", "round-robin", "--first-token-timeout", "8")
    paused, alive = engine_replicas
    body = {"model": MODEL, "prompt": "retry me", "max_tokens": 3}
    with ThreadPoolExecutor(2) as pool, paused.core_paused():
        # round-robin places one of the two on each replica
        answers = [pool.submit(httpx.post, gw.base_url + "/completions", json=body, timeout=120)]
        answers.append(
            pool.submit(httpx.post, gw.base_url + "/completions", json=body, timeout=120)
        )
        results = [a.result(timeout=120) for a in answers]
        replicas = {r["address"]: r for r in gw.stats()["replicas"]}
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    metrics = httpx.get(gw.internal_url + "/metrics", timeout=15).text
    assert "scaleserve_gateway_retries_total 1.0" in metrics
    assert replicas[paused.address]["serving"] is False  # ejected after its stall
    assert replicas[alive.address]["serving"] is True
