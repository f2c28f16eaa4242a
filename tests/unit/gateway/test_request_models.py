"""Request bodies decoded into their typed models: msgspec's complaints become OpenAI's 400
naming the field, the wire bytes and an already-parsed body decode alike, and fields the models
do not know are ignored."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from scaleserve.gateway.embed_protocol import parse_embedding
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.protocol import parse_chat, parse_completion, parse_json
from scaleserve.gateway.request_decode import invalid_field, param_of

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "user", "content": "hi"}]


def completion(**kw: object) -> dict[str, Any]:
    return {"model": "m", "prompt": "hi", **kw}


def chat(**kw: object) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **kw}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (completion(temperature="hot"), "temperature", "invalid_type"),
        (completion(temperature=2.5), "temperature", "invalid_value"),
        (completion(top_p=0), "top_p", "invalid_value"),
        (completion(n=True), "n", "invalid_type"),
        (completion(max_tokens=1.5), "max_tokens", "invalid_type"),
        (completion(max_tokens=2**40), "max_tokens", "invalid_value"),
        (completion(seed=2.0**63), "seed", "invalid_value"),
        (completion(stop=["a", ""]), "stop", "invalid_value"),
        (completion(stop_token_ids=[1, -1]), "stop_token_ids", "invalid_value"),
        (completion(stream_options={"include_usage": "yes"}, stream=True), "stream_options", None),
        (completion(logit_bias={"x": 1}), "logit_bias", "invalid_type"),
        (completion(prompt=[1, {"a": 1}]), "prompt", "invalid_type"),
        (chat(messages=[{"content": "x"}]), "messages[0].role", "missing_required_parameter"),
        (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), None, None),
        (chat(messages=[*MESSAGES, {"role": "tool", "name": 3}]), "messages[1].name", None),
        (chat(tools=[{"function": "f"}]), "tools", "invalid_type"),
        (chat(tool_choice={"function": {"name": 5}}), "tool_choice.function.name", None),
        (chat(reasoning_effort="extreme"), "reasoning_effort", "invalid_value"),
        (chat(response_format={"type": "json_schema", "json_schema": 1}), "response_format", None),
    ],
)
def test_type_and_range_errors_name_the_field(
    body: dict[str, Any], param: str | None, code: str | None
) -> None:
    parse = parse_chat if "messages" in body else parse_completion
    for source in (body, orjson.dumps(body)):
        with pytest.raises(InvalidRequestError) as info:
            parse(source)
        assert info.value.status == 400
        assert info.value.param == (param or "messages[0].content")
        if code is not None:
            assert info.value.code == code
        assert info.value.message


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("n", "n"),
        ("stop[2]", "stop"),
        ("stream_options.include_usage", "stream_options"),
        ("messages", "messages"),
        ("messages[3]", "messages[3]"),
        ("messages[3].content[1].text", "messages[3].content"),
        ("tools[0].function", "tools"),
        ("tool_choice.function.name", "tool_choice.function.name"),
        ("input[1][0]", "input"),
    ],
)
def test_param_is_the_top_field_except_in_messages_and_tool_choice(path: str, param: str) -> None:
    assert param_of(path) == param


def test_msgspec_messages_map_to_codes() -> None:
    typed = invalid_field("Expected `int | null`, got `str` - at `$.seed`")
    assert (typed.param, typed.code) == ("seed", "invalid_type")
    assert "seed" in typed.message
    ranged = invalid_field("Expected `int` >= 1 - at `$.n`")
    assert (ranged.param, ranged.code) == ("n", "invalid_value")
    key = invalid_field("Expected `int`, got `str` - at `key` in `$.logit_bias`")
    assert (key.param, key.code) == ("logit_bias", "invalid_type")
    root = invalid_field("Expected `object`, got `array`")
    assert (root.param, root.message) == (None, "request body must be a JSON object")


def test_bytes_and_parsed_bodies_decode_alike() -> None:
    body = completion(
        max_tokens=5.0, top_k=0, seed=7, stop="x", temperature=1, logit_bias={"3": 200}
    )
    from_bytes, from_dict = parse_completion(orjson.dumps(body)), parse_completion(body)
    assert from_bytes == from_dict
    s = from_bytes.sampling
    assert (s.max_tokens, s.top_k, s.seed, s.stop, s.temperature) == (5, -1, 7, ("x",), 1.0)
    assert from_bytes.choices.logit_bias == ((3, 100.0),)


def test_unknown_fields_are_ignored_and_null_is_absent() -> None:
    body = chat(frobnicate={"a": [1]}, temperature=None, stream=None, tools=None, n=None)
    req = parse_chat(orjson.dumps(body))
    assert req.sampling.temperature is None
    assert not req.stream
    assert req.tools is None
    assert req.choices.n == 1
    assert parse_chat(chat(messages=[{"role": "user", "content": "x", "extra": 1}])).messages == (
        {"role": "user", "content": "x"},
    )


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b"null", b'"x"', b"\xff\xfe"])
def test_bodies_that_are_not_objects_are_400s(raw: bytes) -> None:
    for parse in (parse_json, parse_completion, parse_chat, parse_embedding):
        with pytest.raises(InvalidRequestError) as info:
            parse(raw)
        assert info.value.param is None


def test_embedding_bodies_decode_from_bytes() -> None:
    req = parse_embedding(b'{"model": "m", "input": [[1, 2], [3]], "dimensions": 4}')
    assert (req.inputs, req.dimensions, req.encoding_format) == (((1, 2), (3,)), 4, "float")
