"""The OpenAI parameters that shape choices: parsing, the engine's sampling settings, logprobs
objects and the assembly of n choices from one engine stream (bodies and SSE frames)."""

from __future__ import annotations

import json

import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway import sse
from scaleserve.gateway.choices import Collector, Echo, Framer
from scaleserve.gateway.engine_request import sampling_params
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.protocol import parse_chat, parse_completion

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**kw: object) -> dict:
    return {"model": "m", "messages": MESSAGES, **kw}


def completion(**kw: object) -> dict:
    return {"model": "m", "prompt": "hi", **kw}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(top_logprobs=2), "top_logprobs"),
        (chat(logprobs=True, top_logprobs=21), "top_logprobs"),
        (chat(logprobs=3), "logprobs"),
        (chat(n=129), "n"),
        (chat(response_format={"type": "xml"}), "response_format"),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"schema": []}}),
            "response_format",
        ),
        (chat(logit_bias=[1, 2]), "logit_bias"),
        (chat(logit_bias={"5": "up"}), "logit_bias"),
        (chat(tools=[{"type": "function"}]), "tools"),
    ],
)
def test_refusals_name_their_param(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(body)
    assert info.value.param == param


def test_chat_parameters_reach_the_engine_request() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = parse_chat(
        chat(
            n=3,
            logprobs=True,
            top_logprobs=4,
            logit_bias={"7": 150, "9": -3.5},
            seed=11,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    )
    sp = sampling_params(req, vocab_size=512)
    assert (sp.n, sp.logprobs, sp.seed) == (3, 4, 11)
    assert not sp.HasField("prompt_logprobs")
    assert dict(sp.logit_bias) == {7: 100.0, 9: -3.5}  # clamped to [-100, 100] as vLLM does
    assert json.loads(sp.structured_output.json_schema) == schema
    plain = sampling_params(parse_chat(chat(logprobs=False, top_logprobs=0)), vocab_size=512)
    assert not plain.HasField("logprobs")
    assert not plain.HasField("n")
    assert not plain.HasField("structured_output")


def test_echo_with_logprobs_asks_for_prompt_logprobs() -> None:
    sp = sampling_params(parse_completion(completion(echo=True, logprobs=2)), vocab_size=512)
    assert (sp.logprobs, sp.prompt_logprobs) == (2, 2)
    json_object = parse_completion(completion(response_format={"type": "json_object"}))
    assert sampling_params(json_object, vocab_size=512).structured_output.json_object


def test_out_of_vocabulary_logit_bias_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        sampling_params(parse_chat(chat(logit_bias={"600": 1})), vocab_size=512)
    assert info.value.param == "logit_bias"


def top(*pairs: tuple[str, float]) -> list[engine_pb2.TopLogprob]:
    return [engine_pb2.TopLogprob(token=t, logprob=v) for t, v in pairs]


def msg(
    index: int, text: str, ids: list[int], finish: str = "", **kw: object
) -> engine_pb2.GenerateResponse:
    return engine_pb2.GenerateResponse(
        index=index, text=text, token_ids=ids, finish_reason=finish, **kw
    )


def entry(token: str, logprob: float, *others: tuple[str, float]) -> engine_pb2.TokenLogprob:
    return engine_pb2.TokenLogprob(token=token, logprob=logprob, top=top((token, logprob), *others))


def test_collector_assembles_n_choices_with_logprobs() -> None:
    req = parse_chat(chat(n=2, logprobs=True, top_logprobs=1))
    col = Collector(req, None)
    assert not col.add(msg(1, "B", [5], logprobs=[entry("B", -0.5, ("C", -1.0))]))
    assert not col.add(msg(0, "A", [4], logprobs=[entry("A", -0.1, ("Z", -3.0))]))
    assert not col.add(msg(1, "", [], finish="length"))
    assert col.add(msg(0, "a", [6], finish="stop", logprobs=[entry("a", float("-inf"))]))
    first, second = col.choices()
    assert (first["index"], first["message"]["content"], first["finish_reason"]) == (
        0,
        "Aa",
        "stop",
    )
    assert (second["message"]["content"], second["finish_reason"]) == ("B", "length")
    content = first["logprobs"]["content"]
    assert [c["token"] for c in content] == ["A", "a"]
    assert content[1]["logprob"] == -9999.0  # -inf as OpenAI writes it
    assert content[0]["top_logprobs"] == [
        {"token": "A", "logprob": pytest.approx(-0.1), "bytes": [65]}
    ]


def test_completion_echo_logprobs_start_with_the_prompt() -> None:
    req = parse_completion(completion(echo=True, logprobs=1))
    col = Collector(req, Echo("hi", lambda: "<s>"))
    prompt = [entry("hi", -2.0, ("ho", -1.0))]
    assert col.add(
        msg(
            0,
            " there",
            [9],
            finish="length",
            logprobs=[entry(" there", -0.2)],
            prompt_logprobs=prompt,
        )
    )
    (choice,) = col.choices()
    assert choice["text"] == "hi there"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["<s>", "hi", " there"]
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["text_offset"] == [0, 3, 5]
    assert logprobs["top_logprobs"][1] == {"hi": -2.0, "ho": -1.0}  # top + 1 entries, as vLLM


def frames(data: bytes) -> list[dict]:
    return [
        json.loads(part[6:]) for part in data.decode().split("\n\n") if part.startswith("data: ")
    ]


def test_framer_streams_each_choice_under_its_index() -> None:
    req = parse_chat(chat(n=2, stream=True, stream_options={"include_usage": True}))
    framer = Framer(req, sse.StreamEncoder("chat", "id", 1, "m", True), 3, None)
    opening = frames(framer.opening())
    assert [f["choices"][0]["index"] for f in opening] == [0, 1]
    out = framer.frame(msg(1, "x", [1])) + framer.frame(msg(0, "y", [2], finish="stop"))
    assert not framer.done
    out += framer.frame(msg(1, "", [], finish="length"))
    assert framer.done
    got = [
        (f["choices"][0]["index"], f["choices"][0]["delta"], f["choices"][0]["finish_reason"])
        for f in frames(out)
    ]
    assert got == [(1, {"content": "x"}, None), (0, {"content": "y"}, "stop"), (1, {}, "length")]


def test_continuous_usage_counts_each_choice() -> None:
    req = parse_completion(
        completion(
            stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}
        )
    )
    framer = Framer(req, sse.StreamEncoder("completion", "id", 1, "m", True), 3, None)
    usage = [
        frames(framer.frame(m))[0]["usage"]
        for m in (msg(0, "a", [1, 2]), msg(0, "b", [3], finish="stop"))
    ]
    assert [u["completion_tokens"] for u in usage] == [2, 3]
    assert all(u["prompt_tokens"] == 3 for u in usage)


def test_developer_messages_become_one_leading_system_message() -> None:
    from scaleserve.gateway.chat_roles import developer_as_system

    messages = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "u"},
        {"role": "developer", "content": "B"},
    ]
    assert developer_as_system(messages, "{{ messages }}") == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": "u"},
    ]
    assert developer_as_system(messages, "{% if m.role == 'developer' %}") == messages
    alone = [{"role": "developer", "content": "B"}, {"role": "user", "content": "u"}]
    assert developer_as_system(alone, "")[0] == {"role": "system", "content": "B"}
