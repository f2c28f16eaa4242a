"""Two replicas share load per routing policy; a replica killed mid-run is routed around."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.engines import TOOL_ARGS, EngineLauncher, EngineProcess, cores_paused
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess, engine_stats

pytestmark = pytest.mark.gateway


def requests_by_engine(engines: list[EngineProcess]) -> list[int]:
    return [engine_stats(e.address).requests_total for e in engines]


def complete(gw: GatewayProcess, prompt: str, max_tokens: int = 4, **extra: object) -> dict:
    response = httpx.post(
        gw.base_url + "/completions",
        json={
            "model": MODEL,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            **extra,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


def delta(before: list[int], after: list[int]) -> list[int]:
    return [a - b for a, b in zip(after, before, strict=True)]


def test_round_robin_alternates(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--routing", "round-robin")
    before = requests_by_engine(engine_replicas)
    for i in range(6):
        complete(gw, f"Hello number {i}")
    assert delta(before, requests_by_engine(engine_replicas)) == [3, 3]


def test_least_in_flight_spreads_concurrent_requests(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--routing", "least-in-flight")
    before = requests_by_engine(engine_replicas)
    with ThreadPoolExecutor(8) as pool:
        # the engines held until all eight are placed: each arrival sees the others in flight,
        # however fast the machine
        with cores_paused(engine_replicas):
            futures = [
                pool.submit(complete, gw, f"Count {i}", 900, ignore_eos=True) for i in range(8)
            ]
            gw.wait_in_flight(8)
        for future in futures:
            future.result(timeout=120)
    spread = delta(before, requests_by_engine(engine_replicas))
    assert sum(spread) == 8
    assert min(spread) >= 3, spread


def test_prefix_affinity_keeps_a_prefix_on_one_replica(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--routing", "prefix-affinity")
    preamble = "The operator reconciles the desired state with the observed state. " * 3
    before = requests_by_engine(engine_replicas)
    for i in range(5):
        complete(gw, preamble + f"Question {i}?")
    same = delta(before, requests_by_engine(engine_replicas))
    assert sorted(same) == [0, 5], (same, gw.stats()["replicas"], gw.log_tail())
    before = requests_by_engine(engine_replicas)
    for i in range(12):
        complete(gw, f"{i} " * (i + 1) + "Write a short poem about the sea.")
    spread = delta(before, requests_by_engine(engine_replicas))
    assert sum(spread) == 12
    assert min(spread) >= 1, (spread, gw.stats()["replicas"], gw.log_tail())


def stream_frames(gw: GatewayProcess, max_tokens: int, started: threading.Event) -> list:
    """Stream a completion; return its decoded frames ("[DONE]" as a string)."""
    frames: list = []
    payload = {
        "model": MODEL,
        "prompt": "Count from one to ten:",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", gw.base_url + "/completions", json=payload, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            frames.append(data if data == "[DONE]" else json.loads(data))
            started.set()
    return frames


def wait_started(events: list[threading.Event], n: int, timeout_s: float = 60) -> bool:
    """Wait until at least `n` of the streams have received a frame."""
    deadline = time.monotonic() + timeout_s
    while sum(ev.is_set() for ev in events) < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_killing_a_replica_mid_run(
    engine_launcher: EngineLauncher,
    tiny_model_dir: Path,
    engine_replica: EngineProcess,
    gateway_factory: GatewayFactory,
) -> None:
    # the shared replica's configuration: one model to the gateway, so both take its requests
    victim = engine_launcher.launch(tiny_model_dir, *TOOL_ARGS, name="victim")
    gw = gateway_factory([victim, engine_replica], "--routing", "round-robin")
    for i in range(2):  # one short request on each, so no first-request warm-up skews timing
        complete(gw, f"warm up {i}")
    events = [threading.Event() for _ in range(4)]

    with ThreadPoolExecutor(4) as pool:
        # Both engines held until all four streams are placed (two each); then the survivor
        # runs its two; then the victim runs in short slices only until its own two have sent
        # a frame, so they are cut mid-answer however fast the machine.
        with victim.core_paused():
            with engine_replica.core_paused():
                futures = [pool.submit(stream_frames, gw, 1000, ev) for ev in events]
                gw.wait_in_flight(4)
                placed = {r["address"]: r["in_flight"] for r in gw.stats()["replicas"]}
            on_victim = placed[victim.address]
            assert on_victim == 2, placed  # round robin over one model's two replicas
            assert wait_started(events, 4 - on_victim), "the survivor's streams did not start"
            started = victim.step_core_until(lambda: all(ev.is_set() for ev in events))
            assert started, "the victim's streams did not start"
            os.killpg(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        results = [f.result(timeout=120) for f in futures]
    # Every stream ended with [DONE]: those on the survivor finished, those on the victim got
    # one error event first. None hung.
    cut = completed = 0
    for frames in results:
        assert frames[-1] == "[DONE]"
        last = frames[-2]
        if "error" in last:
            cut += 1
            assert set(last["error"]) == {"message", "type", "param", "code"}
            assert last["error"]["type"] == "server_error"
        else:
            completed += 1
            assert last["choices"][0]["finish_reason"] == "length"
    assert cut == on_victim, (cut, placed, [frames[-2] for frames in results], gw.log_tail())
    assert completed == 4 - on_victim
    assert time.monotonic() - killed_at < 60
    # New requests all go to the survivor (retried there if the dead one was still listed).
    for i in range(6):
        assert complete(gw, f"after the failure {i}")["choices"][0]["finish_reason"]
    replicas = {r["address"]: r for r in gw.stats()["replicas"]}
    assert replicas[victim.address]["healthy"] is False
    assert replicas[victim.address]["serving"] is False
    assert replicas[engine_replica.address]["serving"] is True
    assert gw.stats()["in_flight"] == 0


def test_client_disconnect_aborts_the_engine_request(
    gateway: GatewayProcess, engine_replicas: list[EngineProcess]
) -> None:
    payload = {
        "model": MODEL,
        "prompt": "Write a short poem about the sea.",
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
    }

    def settled() -> tuple[int, int, float]:
        aborted = sum(engine_stats(e.address).aborted_total for e in engine_replicas)
        engine_in_flight = sum(engine_stats(e.address).in_flight_requests for e in engine_replicas)
        return aborted, engine_in_flight, gateway.stats()["in_flight"]

    aborted_before = settled()[0]
    # The engines paused before the request: it waits in an engine (no token yet) however fast
    # the machine, until the client gives up on it. A client that leaves once tokens flow
    # cannot be timed here: a fast engine finishes 1,000 tokens before the client has read the
    # first frame. The gateway cancels both the same way (its disconnect watcher).
    with cores_paused(engine_replicas):
        with (
            httpx.Client(timeout=httpx.Timeout(60, read=5)) as client,
            pytest.raises(httpx.ReadTimeout),
            client.stream("POST", gateway.base_url + "/completions", json=payload),
        ):
            pass
        # The engine counts the abort before the gateway's bookkeeping settles: wait for both.
        deadline = time.monotonic() + 20
        state = settled()
        while time.monotonic() < deadline and state != (aborted_before + 1, 0, 0):
            time.sleep(0.1)
            state = settled()
    aborted, engine_in_flight, gateway_in_flight = state
    assert aborted == aborted_before + 1, gateway.log_tail()
    assert engine_in_flight == 0
    assert gateway_in_flight == 0


def wait_replica(gw: GatewayProcess, address: str, serving: bool, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if {r["address"]: r["serving"] for r in gw.stats()["replicas"]}[address] is serving:
            return
        time.sleep(0.1)
    pytest.fail(f"replica {address} never became serving={serving}: {gw.stats()}")


def test_unresponsive_replica_is_taken_out_and_probed_back(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    # A frozen engine never answers, so the probe timeout only sets how soon it is noticed;
    # a short one would also take out the live engine whenever a busy machine delays it.
    gw = gateway_factory(engine_replicas, "--routing", "round-robin", "--health-timeout", "2")
    alive, frozen = engine_replicas
    os.killpg(frozen.pid, signal.SIGSTOP)
    try:
        wait_replica(gw, frozen.address, serving=False)
        before = engine_stats(alive.address).requests_total
        for i in range(4):
            complete(gw, f"while one sleeps {i}")
        assert engine_stats(alive.address).requests_total - before == 4
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    wait_replica(gw, frozen.address, serving=True)
    before_both = requests_by_engine(engine_replicas)
    for i in range(4):
        complete(gw, f"both awake {i}")
    assert delta(before_both, requests_by_engine(engine_replicas)) == [2, 2]
