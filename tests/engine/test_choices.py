"""n choices, logit bias and structured output through the engine's gRPC stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaleserve.engine.client import EngineClient
from scaleserve.engine.proto import engine_pb2
from tests.engine.reference import PROMPT_TEXTS, encode
from tests.fixtures.engines import EngineProcess

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def prompt(tiny_model_dir: Path) -> list[int]:
    return encode(tiny_model_dir, PROMPT_TEXTS[0])


@pytest.mark.asyncio
async def test_n_choices_arrive_by_index_and_match_single_requests(
    engine_replica: EngineProcess, prompt: list[int]
) -> None:
    seeded = {"temperature": 1.0, "max_tokens": 10, "ignore_eos": True}
    async with EngineClient(engine_replica.address) as client:
        messages = [m async for m in client.deltas(prompt, n=3, seed=5, **seeded)]
        singles = [await client.generate(prompt, seed=5 + i, **seeded) for i in range(3)]
    by_index: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for m in messages:
        by_index[m.index].extend(m.token_ids)
    assert sorted(m.index for m in messages if m.finish_reason) == [0, 1, 2]
    last = messages[-1]
    assert last.finish_reason == "length"
    assert last.usage.completion_tokens == 30
    assert last.usage.prompt_tokens == len(prompt)
    # choice i samples as a single request seeded with seed + i, as vLLM's parallel sampling
    assert [by_index[i] for i in range(3)] == [s.token_ids for s in singles]


@pytest.mark.asyncio
async def test_logit_bias_and_a_json_schema_constrain_the_tokens(
    engine_replica: EngineProcess, prompt: list[int]
) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    async with EngineClient(engine_replica.address) as client:
        forced = await client.generate(
            prompt, temperature=0.0, max_tokens=4, logit_bias={77: 100.0}
        )
        shaped = await client.generate(
            prompt,
            temperature=0.0,
            max_tokens=200,
            structured_output=engine_pb2.StructuredOutput(json_schema=json.dumps(schema)),
        )
    assert forced.token_ids == [77] * 4
    assert shaped.finish_reason == "stop"
    assert json.loads(shaped.text)["answer"] in ("yes", "no")
