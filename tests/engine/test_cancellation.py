"""Abort and client cancellation free the vLLM request at once (Stats shows it gone).

Each test pauses the engine core and waits until the engine has admitted its requests, so they
are still in flight when aborted however fast (or busy) the machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from scaleserve.engine.client import EngineClient, generate_request, read_rest
from tests.engine.reference import encode
from tests.fixtures.engines import EngineProcess, stats_until, wait_admitted

pytestmark = pytest.mark.engine

LONG = {"max_tokens": 900, "temperature": 0.0, "ignore_eos": True}


async def wait_idle(client: EngineClient) -> None:
    await stats_until(
        client,
        lambda s: s.running_requests + s.waiting_requests + s.in_flight_requests == 0,
        "no request held",
        within_s=3.0,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("as_text", [False, True], ids=["token-ids", "text"])
async def test_abort_ends_the_stream_and_frees_the_request(
    engine_replica: EngineProcess, tiny_model_dir: Path, as_text: bool
) -> None:
    text = "The quick brown fox"
    prompt: str | list[int] = text if as_text else encode(tiny_model_dir, text)
    async with EngineClient(engine_replica.address) as client:
        with engine_replica.core_paused():
            call = client.stream(generate_request(prompt, "to-abort", **LONG))
            before = await wait_admitted(client, 1)
            assert await client.abort("to-abort") is True
        rest = await read_rest(call)
        assert rest[-1].finish_reason == "abort"
        assert sum(len(m.token_ids) for m in rest) < LONG["max_tokens"]
        await wait_idle(client)
        after = await client.stats()
        assert after.aborted_total >= before.aborted_total + 1


@pytest.mark.asyncio
async def test_abort_of_an_unknown_request_finds_nothing(engine_replica: EngineProcess) -> None:
    async with EngineClient(engine_replica.address) as client:
        assert await client.abort("never-started") is False


@pytest.mark.asyncio
async def test_client_cancel_aborts_the_request_at_once(
    engine_replica: EngineProcess, tiny_model_dir: Path
) -> None:
    prompt = encode(tiny_model_dir, "Hello, how are you today?")
    async with EngineClient(engine_replica.address) as client:
        before = await client.stats()
        with engine_replica.core_paused():
            calls = [
                client.stream(generate_request(prompt, f"cancel-{i}", **LONG)) for i in range(4)
            ]
            await wait_admitted(client, len(calls))
            for call in calls:
                call.cancel()
        for call in calls:
            with pytest.raises(asyncio.CancelledError):
                await call.read()
        await wait_idle(client)
        after = await client.stats()
        assert after.aborted_total >= before.aborted_total + 4
        # The engine serves the next request normally.
        done = await client.generate(prompt, max_tokens=4, temperature=0.0, ignore_eos=True)
        assert len(done.token_ids) == 4


@pytest.mark.asyncio
async def test_duplicate_request_id_is_refused(
    engine_replica: EngineProcess, tiny_model_dir: Path
) -> None:
    prompt = encode(tiny_model_dir, "The gateway streams tokens")
    async with EngineClient(engine_replica.address) as client:
        with engine_replica.core_paused():
            call = client.stream(generate_request(prompt, "same-id", **LONG))
            await wait_admitted(client, 1)
            # Bounded: a duplicate that slipped through would wait on the paused core forever.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(
                    client.generate(prompt, request_id="same-id", max_tokens=2), timeout=30
                )
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "request_id" in (info.value.details() or "")
        call.cancel()
        await wait_idle(client)
