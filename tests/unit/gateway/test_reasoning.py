"""Reasoning at the gateway: the request's reasoning fields, what reaches the chat template and
the engine, and the engine's reasoning shaped as `reasoning_content` (and vLLM's `reasoning`)
in whole answers and stream frames."""

from __future__ import annotations

import json

import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway import sse
from scaleserve.gateway.choices import Collector, Framer
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.protocol import parse_chat

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**kw: object) -> dict:
    return {"model": "m", "messages": MESSAGES, **kw}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(include_reasoning="yes"), "include_reasoning"),
        (chat(reasoning_effort="extreme"), "reasoning_effort"),
        (chat(thinking_token_budget=100), "thinking_token_budget"),
    ],
)
def test_refusals_name_their_param(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(body)
    assert info.value.param == param
    assert info.value.status == 400


def test_reasoning_effort_switches_thinking_in_the_template_unless_the_client_did() -> None:
    off = parse_chat(chat(reasoning_effort="none")).reasoning
    assert off.template_kwargs(None) == {"reasoning_effort": "none", "enable_thinking": False}
    high = parse_chat(chat(reasoning_effort="high")).reasoning
    assert high.template_kwargs({"enable_thinking": False, "x": 1}) == {
        "enable_thinking": False,
        "x": 1,
        "reasoning_effort": "high",
    }
    plain = parse_chat(chat()).reasoning
    assert plain.template_kwargs({"enable_thinking": True}) == {"enable_thinking": True}


def test_the_engine_learns_the_template_kwargs_and_whether_to_keep_the_reasoning() -> None:
    req = parse_chat(chat(include_reasoning=False, stream=True))
    spec = req.reasoning.engine_spec({"enable_thinking": True}, req.stream)
    assert spec.omit is True
    assert json.loads(spec.chat_template_kwargs) == {"enable_thinking": True}
    assert spec.whole_output is False
    assert parse_chat(chat()).reasoning.engine_spec(None, False).chat_template_kwargs == ""


def test_a_whole_answer_carries_reasoning_content_and_content_null_when_all_was_thought() -> None:
    req = parse_chat(chat(n=2, temperature=1.0))
    collector = Collector(req, None, reasoning=True)
    collector.add(
        engine_pb2.GenerateResponse(index=0, reasoning="Hmm.", text="Paris.", finish_reason="stop")
    )
    collector.add(
        engine_pb2.GenerateResponse(
            index=1, reasoning="Still thinking", content_null=True, finish_reason="length"
        )
    )
    first, second = (c["message"] for c in collector.choices())
    assert (first["content"], first["reasoning_content"], first["reasoning"]) == (
        "Paris.",
        "Hmm.",
        "Hmm.",
    )
    assert (second["content"], second["reasoning_content"]) == (None, "Still thinking")


def test_answers_without_a_reasoning_parser_have_no_reasoning_fields() -> None:
    collector = Collector(parse_chat(chat()), None)
    collector.add(engine_pb2.GenerateResponse(index=0, text="Paris.", finish_reason="stop"))
    assert "reasoning_content" not in collector.choices()[0]["message"]


def test_stream_frames_carry_reasoning_deltas_then_content() -> None:
    req = parse_chat(chat(stream=True))
    enc = sse.StreamEncoder("chat", "id", 1, "m")
    framer = Framer(req, enc, 3, None, reasoning=True)
    deltas = []
    for msg in (
        engine_pb2.GenerateResponse(index=0, reasoning="Hmm", token_ids=[5]),
        engine_pb2.GenerateResponse(index=0, token_ids=[6]),  # the end tag: held back
        engine_pb2.GenerateResponse(index=0, text="Paris", token_ids=[7], finish_reason="stop"),
    ):
        frame = framer.frame(msg)
        deltas.append(json.loads(frame[6:])["choices"][0]["delta"] if frame else None)
    assert deltas == [
        {"reasoning_content": "Hmm", "reasoning": "Hmm"},
        None,
        {"content": "Paris"},
    ]


def test_include_reasoning_false_keeps_the_logprobs_of_every_token() -> None:
    # The engine omits the reasoning text; the thinking tokens' logprobs still arrive and stay.
    thought = engine_pb2.TokenLogprob(token_id=5, token="Hmm", logprob=-0.5)
    answer = engine_pb2.TokenLogprob(token_id=7, token="Paris", logprob=-0.25)
    thinking = engine_pb2.GenerateResponse(index=0, token_ids=[5], logprobs=[thought])
    final = engine_pb2.GenerateResponse(
        index=0, text="Paris", token_ids=[7], logprobs=[answer], finish_reason="stop"
    )
    req = parse_chat(chat(include_reasoning=False, logprobs=True))
    assert req.reasoning.engine_spec(None, False).omit
    collector = Collector(req, None, reasoning=True)
    collector.add(thinking)
    collector.add(final)
    (choice,) = collector.choices()
    assert [e["token"] for e in choice["logprobs"]["content"]] == ["Hmm", "Paris"]
    assert choice["message"]["reasoning_content"] is None

    streamed = parse_chat(chat(include_reasoning=False, logprobs=True, stream=True))
    framer = Framer(streamed, sse.StreamEncoder("chat", "id", 1, "m"), 3, None, reasoning=True)
    tokens = []
    for msg in (thinking, final):
        frame = framer.frame(msg)
        assert frame, "a frame that carries only logprobs is still sent"
        tokens += [e["token"] for e in json.loads(frame[6:])["choices"][0]["logprobs"]["content"]]
    assert tokens == ["Hmm", "Paris"]
