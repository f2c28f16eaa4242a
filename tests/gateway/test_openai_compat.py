"""The official `openai` client against the gateway over real engines: complete, correct answers."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from scaleserve.latency import GROWTH, count, parse_report, quantile
from tests.fixtures.engines import EngineProcess
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess, engine_generate_text

pytestmark = pytest.mark.gateway

REQUESTS = 4
PROMPT = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles"
MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is the capital of France?"},
]


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60)


def async_client(gateway: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60
    )


def tokenize(text: str) -> list[int]:
    from tokenizers import Tokenizer

    from scaleserve.engine.tiny_model import default_model_dir

    tok = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    return list(tok.encode(text).ids)


def test_models_lists_the_served_model(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        models = c.models.list()
        assert [m.id for m in models.data] == [MODEL]
        assert c.models.retrieve(MODEL).id == MODEL


def test_completion_matches_the_engine_token_for_token(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        result = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    assert result.id.startswith("cmpl-")
    assert result.object == "text_completion"
    assert result.model == MODEL
    assert result.created > 0
    choice = result.choices[0]
    assert choice.index == 0
    assert choice.finish_reason in ("length", "stop")
    prompt_ids = tokenize(PROMPT)
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(prompt_ids)
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    if choice.finish_reason == "length":
        assert result.usage.completion_tokens == 12
    # The gateway tokenized; the engine, given the same ids directly, says the same thing.
    address = gateway.stats()["replicas"][0]["address"]
    assert choice.text == engine_generate_text(address, prompt_ids, 12)


def test_streamed_completion_equals_the_unstreamed_one(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        whole = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0)
        chunks = list(
            c.completions.create(
                model=MODEL,
                prompt=PROMPT,
                max_tokens=16,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert len({ch.id for ch in chunks}) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_chat_completion_sync(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        result = c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_completion_tokens=10,
            temperature=0,  # type: ignore[arg-type]
        )
        streamed = c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=10,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = list(streamed)
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    message = result.choices[0].message
    assert message.role == "assistant"
    assert message.content
    assert result.usage is not None
    assert result.usage.completion_tokens <= 10
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == message.content
    assert chunks[-1].choices[0].finish_reason == result.choices[0].finish_reason


@pytest.mark.asyncio
async def test_async_client_chat_and_completion_streams(gateway: GatewayProcess) -> None:
    async with async_client(gateway) as c:
        whole = await c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        stream = await c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = []
        usage = None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        completion = await c.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0
        )
        cstream = await c.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stream=True
        )
        ctext = "".join([ch.choices[0].text async for ch in cstream])
    assert "".join(parts) == whole.choices[0].message.content
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert ctext == completion.choices[0].text


def test_stop_sequence_ends_the_answer_before_it(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        free = (
            c.completions.create(
                model=MODEL,
                prompt=PROMPT,
                max_tokens=24,
                temperature=0,
                extra_body={"ignore_eos": True},
            )
            .choices[0]
            .text
        )
        words = [w for w in free.split(" ") if w.strip()]
        if len(words) < 3:
            pytest.skip(f"the random model said too little to pick a stop word: {free!r}")
        stop = words[len(words) // 2]
        cut = free.index(stop)
        stopped = c.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=24,
            temperature=0,
            stop=[stop],
            extra_body={"ignore_eos": True},
        )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == free[:cut]


def test_seeded_sampling_is_reproducible(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        a, b = (
            c.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=12, temperature=1.0, top_p=0.9, seed=1234
            )
            .choices[0]
            .text
            for _ in range(2)
        )
    assert a == b


def test_token_id_prompts_are_accepted(gateway: GatewayProcess) -> None:
    ids = tokenize(PROMPT)
    with client(gateway) as c:
        by_ids = c.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0)
        by_text = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)  # type: ignore[union-attr]


def test_health_ready_stats_and_metrics(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/healthz").status_code == 200
    assert httpx.get(gateway.url + "/readyz").status_code == 200
    stats = gateway.stats()
    assert set(stats) >= {
        "in_flight",
        "in_flight_avg",
        "window_s",
        "queued",
        "requests_total",
        "replicas",
    }
    assert stats["requests_total"] > 0
    for replica in stats["replicas"]:
        assert set(replica) == {
            "address",
            "tensor_parallel",
            "in_flight",
            "healthy",
            "serving",
            "terminating",
        }
        assert replica["tensor_parallel"] == 1
        assert replica["healthy"]
        assert replica["serving"]
    metrics = httpx.get(gateway.internal_url + "/metrics").text
    assert "scaleserve_gateway_requests_total" in metrics
    assert "scaleserve_gateway_time_to_first_token_seconds_bucket" in metrics
    assert "scaleserve_gateway_replica_up" in metrics
    # the API port serves the OpenAI API and health only; liveness is on the internal port
    assert httpx.get(gateway.url + "/stats").status_code == 404
    assert httpx.get(gateway.url + "/metrics").status_code == 404
    assert httpx.get(gateway.internal_url + "/livez").status_code == 200


def test_stats_report_the_latency_of_real_requests_per_degree(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas)  # its own: nothing else in its stats window
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "ignore_eos": True, "stream": True}
    first_ms, total_ms = [], []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        with httpx.stream("POST", gw.base_url + "/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            first_ms.append((time.perf_counter() - start) * 1000)
            assert [line for line in lines if line][-1] == "data: [DONE]"
        total_ms.append((time.perf_counter() - start) * 1000)
    (tp1,) = parse_report(gw.stats()["latency"])
    assert tp1.tensor_parallel == 1
    assert count(tp1.ttft_ms) == count(tp1.tbt_ms) == REQUESTS
    assert tp1.in_flight_avg > 0
    # what the gateway measured lies within what the client saw (one bucket of rounding)
    ttft, tbt = quantile(tp1.ttft_ms, 0.99), quantile(tp1.tbt_ms, 0.99)
    assert ttft is not None
    assert tbt is not None
    assert 0 < ttft <= max(first_ms) * GROWTH
    assert 0 < tbt * 7 <= max(total_ms) * GROWTH


def test_request_ids_are_echoed_or_made(gateway: GatewayProcess) -> None:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    mine = httpx.post(
        gateway.base_url + "/completions", json=body, headers={"x-request-id": "trace-42"}
    )
    assert mine.status_code == 200
    assert mine.headers["x-request-id"] == "trace-42"
    made = httpx.post(gateway.base_url + "/completions", json={**body, "stream": True})
    assert made.headers["x-request-id"].startswith("req_")
    failed = httpx.post(gateway.base_url + "/completions", json={**body, "model": "nope"})
    assert failed.status_code == 404
    assert failed.headers["x-request-id"].startswith("req_")
    assert httpx.get(gateway.url + "/v1/models").headers["x-request-id"].startswith("req_")
