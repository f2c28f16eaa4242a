"""Lifecycle: not serving until loaded, probes and metrics, model info, drain on SIGTERM, and a
dead engine core giving UNAVAILABLE instead of a hang."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from scaleserve.engine.client import EngineClient, generate_request, read_rest
from scaleserve.engine.proto import engine_pb2
from tests.engine.reference import encode
from tests.fixtures.engines import EngineLauncher, EngineProcess, wait_admitted

pytestmark = pytest.mark.engine

SERVING = engine_pb2.HealthResponse.SERVING
NOT_SERVING = engine_pb2.HealthResponse.NOT_SERVING
DRAINING = engine_pb2.HealthResponse.DRAINING


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class StartupObservations:
    health: list[int] = field(default_factory=list)
    readyz_while_loading: list[int] = field(default_factory=list)
    healthz_while_loading: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def disposable_engines(
    engine_launcher: EngineLauncher, tiny_model_dir: Path
) -> Iterator[tuple[EngineProcess, EngineProcess, StartupObservations]]:
    """Two engines these tests destroy, started together; the first one's start is watched."""
    watched = engine_launcher.start(tiny_model_dir, "--drain-timeout", "60", name="drain")
    other = engine_launcher.start(tiny_model_dir, name="core-kill")
    seen = StartupObservations()
    # The model may finish loading between a health call and the probes after it: probes
    # count as taken "while loading" only once the next health call still says not serving.
    probes: tuple[int, int] | None = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and watched.running():
        try:
            status = watched.health().status
        except grpc.RpcError:
            time.sleep(0.2)
            continue
        seen.health.append(status)
        if status == SERVING:
            break
        if probes is not None:
            seen.readyz_while_loading.append(probes[0])
            seen.healthz_while_loading.append(probes[1])
        probes = (
            http_get(watched.metrics_url + "/readyz")[0],
            http_get(watched.metrics_url + "/healthz")[0],
        )
        time.sleep(0.5)
    watched.wait_serving()
    other.wait_serving()
    yield watched, other, seen
    watched.stop()
    other.stop()


def test_health_is_not_serving_until_the_model_is_loaded(
    disposable_engines: tuple[EngineProcess, EngineProcess, StartupObservations],
) -> None:
    _, _, seen = disposable_engines
    assert seen.health[0] == NOT_SERVING
    assert seen.health[-1] == SERVING
    assert set(seen.readyz_while_loading) == {503}
    assert set(seen.healthz_while_loading) == {200}


def test_probes_and_metrics(engine_replica: EngineProcess, tiny_model_dir: Path) -> None:
    assert http_get(engine_replica.metrics_url + "/healthz")[0] == 200
    assert http_get(engine_replica.metrics_url + "/readyz") == (200, "serving\n")
    assert http_get(engine_replica.metrics_url + "/nope")[0] == 404
    status, body = http_get(engine_replica.metrics_url + "/metrics")
    assert status == 200
    assert "scaleserve_engine_requests_total" in body
    assert "scaleserve_engine_serving 1.0" in body
    assert "vllm:num_requests_running" in body  # vLLM's own gauges share the registry


@pytest.mark.asyncio
async def test_model_info_carries_tokenizer_and_template(
    engine_replica: EngineProcess, tiny_model_dir: Path
) -> None:
    from tokenizers import Tokenizer

    async with EngineClient(engine_replica.address) as client:
        info = await client.model_info()
        stats = await client.stats()
    assert info.served_model_name == "tiny" == stats.served_model_name
    assert info.protocol_version == "v1"
    assert info.max_model_len == 1024 == stats.max_model_len
    assert info.tensor_parallel_size == 1 == stats.tensor_parallel_size
    assert info.vocab_size > 0
    assert info.eos_token_ids
    assert "add_generation_prompt" in info.chat_template
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(info.tokenizer_files)
    tokenizer = Tokenizer.from_str(info.tokenizer_files["tokenizer.json"].decode())
    text = "The quick brown fox"
    assert tokenizer.encode(text, add_special_tokens=False).ids == encode(tiny_model_dir, text)
    assert json.loads(info.tokenizer_files["tokenizer_config.json"])


@pytest.mark.asyncio
async def test_sigterm_drains_in_flight_requests_then_exits(
    disposable_engines: tuple[EngineProcess, EngineProcess, StartupObservations],
    tiny_model_dir: Path,
) -> None:
    engine = disposable_engines[0]
    prompt = encode(tiny_model_dir, "Kubernetes runs containers")
    n_tokens = 64
    async with EngineClient(engine.address) as client:
        # The engine core paused before the requests are sent: they stay in flight (no token
        # made) however fast the machine, so the drain cannot end before the checks below.
        with engine.core_paused():
            calls = [
                client.stream(
                    generate_request(
                        prompt, f"drain-{i}", max_tokens=n_tokens, temperature=0.0, ignore_eos=True
                    )
                )
                for i in range(6)
            ]
            for _ in range(250):
                if (await client.stats()).in_flight_requests == len(calls):
                    break
                await asyncio.sleep(0.02)
            assert (await client.stats()).in_flight_requests == len(calls)
            os.kill(engine.pid, signal.SIGTERM)
            for _ in range(100):
                if (await client.health()).status == DRAINING:
                    break
                await asyncio.sleep(0.02)
            assert (await client.health()).status == DRAINING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.generate(prompt, max_tokens=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await asyncio.to_thread(http_get, engine.metrics_url + "/readyz") == (
                503,
                "draining\n",
            )
            assert engine.process.poll() is None, "the engine exited with requests in flight"
        rests = [await read_rest(call) for call in calls]
    for rest in rests:
        assert sum(len(m.token_ids) for m in rest) == n_tokens
        assert rest[-1].finish_reason == "length"
    exit_code = await asyncio.to_thread(engine.process.wait, 60)
    assert exit_code == 0


@pytest.mark.asyncio
async def test_dead_engine_core_gives_unavailable_not_a_hang(
    disposable_engines: tuple[EngineProcess, EngineProcess, StartupObservations],
    tiny_model_dir: Path,
) -> None:
    engine = disposable_engines[1]
    prompt = encode(tiny_model_dir, "Hello, how are you today?")
    cores = engine.engine_core_pids()
    assert cores, "no EngineCore child process found"
    async with EngineClient(engine.address) as client:
        with engine.core_paused():  # the request is in flight when its core dies
            call = client.stream(
                generate_request(prompt, "doomed", max_tokens=900, temperature=0.0, ignore_eos=True)
            )
            await wait_admitted(client, 1)
            for pid in cores:
                os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(read_rest(call), 20)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 20
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(10):
                await client.generate(prompt, max_tokens=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        health = await client.health()
    assert health.status == NOT_SERVING
    assert "died" in health.message
    assert (await asyncio.to_thread(http_get, engine.metrics_url + "/healthz"))[0] == 503
