"""Invalid requests get INVALID_ARGUMENT with a message naming the field; the engine carries on."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from scaleserve.engine.client import EngineClient, generate_request
from scaleserve.engine.proto import engine_pb2
from tests.fixtures.engines import EngineProcess

pytestmark = pytest.mark.engine

OK_PROMPT = [10, 20, 30, 40]
MAX_MODEL_LEN = 1024  # tests/fixtures/engines.py starts engines with --max-model-len 1024

CASES: list[tuple[str, Any, dict[str, Any], str]] = [
    ("negative max_tokens", OK_PROMPT, {"max_tokens": -1}, "sampling.max_tokens"),
    ("zero max_tokens", OK_PROMPT, {"max_tokens": 0}, "sampling.max_tokens"),
    ("temperature above 2", OK_PROMPT, {"temperature": 2.5}, "sampling.temperature"),
    ("negative temperature", OK_PROMPT, {"temperature": -0.1}, "sampling.temperature"),
    ("top_p zero", OK_PROMPT, {"top_p": 0.0}, "sampling.top_p"),
    ("top_p above 1", OK_PROMPT, {"top_p": 1.5}, "sampling.top_p"),
    ("top_k below -1", OK_PROMPT, {"top_k": -2}, "sampling.top_k"),
    ("unknown stop token", OK_PROMPT, {"stop_token_ids": [3, 10**6]}, "sampling.stop_token_ids[1]"),
    ("empty stop string", OK_PROMPT, {"stop": ["ok", ""]}, "sampling.stop[1]"),
    ("presence penalty", OK_PROMPT, {"presence_penalty": 3.0}, "sampling.presence_penalty"),
    ("frequency penalty", OK_PROMPT, {"frequency_penalty": -2.5}, "sampling.frequency_penalty"),
    ("repetition penalty", OK_PROMPT, {"repetition_penalty": 0.0}, "sampling.repetition_penalty"),
    ("too many logprobs", OK_PROMPT, {"logprobs": 1000}, "sampling.logprobs"),
    ("min above max", OK_PROMPT, {"max_tokens": 2, "min_tokens": 5}, "sampling.min_tokens"),
    ("empty token prompt", [], {}, "prompt_token_ids"),
    ("empty text prompt", "", {}, "prompt_text"),
    ("prompt token outside vocabulary", [1, 2, 10**6], {}, "prompt_token_ids[2]"),
    ("negative prompt token", [1, -5], {}, "prompt_token_ids[1]"),
    ("prompt as long as the context", [7] * MAX_MODEL_LEN, {}, "prompt_token_ids"),
    ("text prompt longer than the context", "fox " * (MAX_MODEL_LEN * 2), {}, "prompt_text"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("prompt", "sampling", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_invalid_request_names_the_field(
    engine_replica: EngineProcess, prompt: Any, sampling: dict[str, Any], field: str
) -> None:
    async with EngineClient(engine_replica.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.generate(prompt, **sampling)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field), info.value.details()


@pytest.mark.asyncio
async def test_missing_prompt_is_invalid(engine_replica: EngineProcess) -> None:
    async with EngineClient(engine_replica.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.Generate(engine_pb2.GenerateRequest(request_id="x")).read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("prompt")
        # Bad requests leave the engine serving and idle.
        health = await client.health()
        stats = await client.stats()
    assert health.status == engine_pb2.HealthResponse.SERVING
    assert stats.in_flight_requests == 0


@pytest.mark.asyncio
async def test_valid_edge_values_are_accepted(engine_replica: EngineProcess) -> None:
    async with EngineClient(engine_replica.address) as client:
        call = client.stream(
            generate_request(
                OK_PROMPT, max_tokens=1, temperature=2.0, top_p=1.0, top_k=-1, logprobs=0
            )
        )
        messages = [m async for m in call]
    assert sum(len(m.token_ids) for m in messages) == 1
    assert messages[-1].finish_reason == "length"
