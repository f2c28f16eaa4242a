"""The official `openai` client with the parameters that shape choices: n, logprobs, echo,
logit_bias and structured output, through the gateway over real engines."""

from __future__ import annotations

import json
import math
from typing import Literal

import openai
import pydantic
import pytest

from tests.gateway.conftest import MODEL, GatewayProcess

pytestmark = pytest.mark.gateway

PROMPT = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)


def test_chat_logprobs_rank_the_greedy_token_first(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        result = c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
        )
    choice = result.choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    content = choice.logprobs.content
    assert len(content) == result.usage.completion_tokens  # type: ignore[union-attr]
    for token in content:
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token  # greedy: the best one was taken
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)
        ranked = [t.logprob for t in token.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)
        assert sum(math.exp(lp) for lp in ranked) <= 1.0 + 1e-4
        assert bytes(token.bytes or []) == token.token.encode()


def test_n2_streaming_assembles_to_the_unstreamed_choices(gateway: GatewayProcess) -> None:
    seeded = {"temperature": 1.0, "seed": 99, "max_tokens": 12}
    with client(gateway) as c:
        whole = c.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, **seeded)  # type: ignore[arg-type]
        stream = c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            n=2,
            stream=True,
            stream_options={"include_usage": True},
            **seeded,
        )
        texts = ["", ""]
        finishes: list[str | None] = [None, None]
        usage = None
        for chunk in stream:
            for part in chunk.choices:
                texts[part.index] += part.delta.content or ""
                finishes[part.index] = part.finish_reason or finishes[part.index]
            usage = chunk.usage or usage
    assert [ch.index for ch in whole.choices] == [0, 1]
    assert texts == [ch.message.content for ch in whole.choices]
    assert finishes == [ch.finish_reason for ch in whole.choices]
    assert texts[0] != texts[1]  # choice i samples with seed + i
    assert usage is not None
    assert whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.completion_tokens <= 24


def test_completion_echo_and_logprobs(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        plain = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
        echoed = c.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=2
        )
    choice = echoed.choices[0]
    assert choice.text == PROMPT + plain.choices[0].text
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens
    assert logprobs.token_logprobs
    prompt_tokens = echoed.usage.prompt_tokens  # type: ignore[union-attr]
    assert len(logprobs.tokens) == prompt_tokens + echoed.usage.completion_tokens  # type: ignore[union-attr]
    assert logprobs.token_logprobs[0] is None  # the first prompt token has no logprob
    assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert logprobs.text_offset is not None
    assert logprobs.text_offset[1] == len(logprobs.tokens[0])


def test_logit_bias_forces_a_token(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        forced = c.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=5,
            temperature=0,
            logit_bias={"70": 100},
            logprobs=0,
        )
    logprobs = forced.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert len(set(logprobs.tokens)) == 1  # token 70 every time


class Verdict(pydantic.BaseModel):
    answer: Literal["yes", "no", "maybe"]
    sure: bool


def test_parse_with_a_pydantic_schema(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        result = c.chat.completions.parse(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            response_format=Verdict,
            max_tokens=200,
            temperature=0,
        )
    message = result.choices[0].message
    assert result.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Verdict)
    assert Verdict.model_validate(json.loads(message.content or "")) == message.parsed
