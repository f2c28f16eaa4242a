"""Generation through the gRPC stream equals vLLM's offline engine, token for token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from scaleserve.engine.client import EngineClient
from tests.engine.reference import PROMPT_TEXTS, OfflineReference, encode
from tests.fixtures.engines import EngineProcess

pytestmark = pytest.mark.engine

MAX_TOKENS = (32, 16, 48, 8, 32, 24, 40, 12)


@pytest.fixture(scope="module")
def prompts(tiny_model_dir: Path) -> list[list[int]]:
    return [encode(tiny_model_dir, text) for text in PROMPT_TEXTS]


@pytest.fixture(scope="module")
def reference(
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    prompts: list[list[int]],
    tmp_path_factory: pytest.TempPathFactory,
) -> list[dict[str, Any]]:
    """Offline results: greedy per prompt (ignore_eos), then one text prompt. Runs while the
    shared engine starts."""
    requests: list[dict[str, Any]] = [
        {"prompt": ids, "max_tokens": n, "temperature": 0.0, "ignore_eos": True}
        for ids, n in zip(prompts, MAX_TOKENS, strict=True)
    ]
    requests.append({"prompt": PROMPT_TEXTS[1], "max_tokens": 20, "temperature": 0.0})
    runner = OfflineReference(
        tiny_model_dir, requests, tmp_path_factory.mktemp("offline") / "offline.log"
    )
    request.getfixturevalue("engine_replica")  # start the engine in parallel
    return runner.results()


@pytest.mark.asyncio
async def test_greedy_stream_equals_offline_generate(
    engine_replica: EngineProcess, prompts: list[list[int]], reference: list[dict[str, Any]]
) -> None:
    async with EngineClient(engine_replica.address) as client:
        results = await asyncio.gather(
            *(
                client.generate(ids, max_tokens=n, temperature=0.0, ignore_eos=True)
                for ids, n in zip(prompts, MAX_TOKENS, strict=True)
            )
        )
    for ids, n, got, want in zip(prompts, MAX_TOKENS, results, reference, strict=False):
        assert got.token_ids == want["token_ids"], f"prompt {ids}"
        assert got.text == want["text"]
        assert got.finish_reason == "length"
        assert got.usage is not None
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (len(ids), n)


@pytest.mark.asyncio
async def test_text_prompt_is_tokenized_like_vllm(
    engine_replica: EngineProcess, reference: list[dict[str, Any]]
) -> None:
    want = reference[-1]
    async with EngineClient(engine_replica.address) as client:
        got = await client.generate(PROMPT_TEXTS[1], max_tokens=20, temperature=0.0)
    assert got.token_ids == want["token_ids"]
    assert got.text == want["text"]
    assert got.finish_reason == want["finish_reason"]
    assert got.usage is not None
    assert got.usage.prompt_tokens == len(want["prompt_token_ids"])


@pytest.mark.asyncio
async def test_64_concurrent_streams_complete_correctly(
    engine_replica: EngineProcess, prompts: list[list[int]], reference: list[dict[str, Any]]
) -> None:
    async with EngineClient(engine_replica.address) as client:
        jobs = [
            client.generate(
                prompts[i % len(prompts)],
                request_id=f"concurrent-{i}",
                max_tokens=MAX_TOKENS[i % len(prompts)],
                temperature=0.0,
                ignore_eos=True,
            )
            for i in range(64)
        ]
        results = await asyncio.gather(*jobs)
        stats = await client.stats()
    for i, got in enumerate(results):
        want = reference[i % len(prompts)]
        assert got.token_ids == want["token_ids"], f"stream {i}"
        assert got.text == want["text"], f"stream {i}"
        assert got.finish_reason == "length"
    assert stats.in_flight_requests == 0
    assert stats.running_requests == 0


@pytest.mark.asyncio
async def test_stop_token_ends_the_stream_with_its_reason(
    engine_replica: EngineProcess, prompts: list[list[int]], reference: list[dict[str, Any]]
) -> None:
    greedy = reference[0]["token_ids"]
    stop_id = greedy[5]
    expected = greedy[: greedy.index(stop_id) + 1]
    async with EngineClient(engine_replica.address) as client:
        got = await client.generate(
            prompts[0], max_tokens=32, temperature=0.0, ignore_eos=True, stop_token_ids=[stop_id]
        )
    assert got.finish_reason == "stop"
    assert got.stop_reason == str(stop_id)
    assert got.token_ids == expected


@pytest.mark.asyncio
async def test_stop_string_is_cut_from_the_text(
    engine_replica: EngineProcess, prompts: list[list[int]], reference: list[dict[str, Any]]
) -> None:
    text = reference[0]["text"]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    if not stop.strip():
        pytest.skip("greedy text has no usable stop string")
    async with EngineClient(engine_replica.address) as client:
        got = await client.generate(
            prompts[0], max_tokens=32, temperature=0.0, ignore_eos=True, stop=[stop]
        )
    assert got.finish_reason == "stop"
    assert got.stop_reason == stop
    assert got.text == text[: text.index(stop)]


@pytest.mark.asyncio
async def test_logprobs_come_with_every_token(
    engine_replica: EngineProcess, prompts: list[list[int]], reference: list[dict[str, Any]]
) -> None:
    async with EngineClient(engine_replica.address) as client:
        messages = [
            m
            async for m in client.deltas(
                prompts[3], max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=2
            )
        ]
    token_ids = [t for m in messages for t in m.token_ids]
    logprobs = [lp for m in messages for lp in m.logprobs]
    assert token_ids == reference[3]["token_ids"]
    assert [lp.token_id for lp in logprobs] == token_ids
    for lp in logprobs:
        assert len(lp.top) == 2
        assert lp.top[0].token_id == lp.token_id  # greedy: the sampled token ranks first
        assert lp.logprob <= 0.0


@pytest.mark.asyncio
async def test_seeded_sampling_is_reproducible(
    engine_replica: EngineProcess, prompts: list[list[int]]
) -> None:
    async with EngineClient(engine_replica.address) as client:
        first, second = await asyncio.gather(
            *(
                client.generate(prompts[2], max_tokens=24, temperature=1.0, seed=7, ignore_eos=True)
                for _ in range(2)
            )
        )
    assert first.token_ids == second.token_ids
    assert len(first.token_ids) == 24
