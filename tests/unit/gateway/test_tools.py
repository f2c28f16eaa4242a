"""Tool calling at the gateway: the tool fields' checks (vLLM's), the template's view of
tool-call history, the engine request, and tool calls in bodies and stream frames."""

from __future__ import annotations

import json

import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway import sse
from scaleserve.gateway.choices import Collector, Framer
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.protocol import parse_chat
from scaleserve.gateway.tools import require_parser

pytestmark = pytest.mark.unit

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**kw: object) -> dict:
    return {"model": "m", "messages": MESSAGES, **kw}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(tools=[]), "tools"),
        (chat(tools=[{"type": "retrieval"}]), "tools"),
        (chat(tool_choice="auto"), "tool_choice"),
        (chat(tools=[TOOL], tool_choice="any"), "tool_choice"),
        (chat(tools=[TOOL], tool_choice={"type": "function"}), "tool_choice.function"),
        (chat(tools=[TOOL], tool_choice={"function": {"name": ""}}), "tool_choice.function.name"),
        (chat(tools=[TOOL], tool_choice={"function": {"name": "g"}}), "tool_choice"),
        (chat(tools=[TOOL], parallel_tool_calls="yes"), "parallel_tool_calls"),
        (chat(functions=[{"name": "f"}]), "functions"),
    ],
)
def test_refusals_name_their_param(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(body)
    assert info.value.param == param


@pytest.mark.parametrize(
    "choice", [None, "auto", "required", {"type": "function", "function": {"name": "f"}}]
)
def test_any_choice_but_none_needs_a_parser(choice: object) -> None:
    body = chat(tools=[TOOL]) if choice is None else chat(tools=[TOOL], tool_choice=choice)
    tools = parse_chat(body).tools
    assert tools is not None
    with pytest.raises(InvalidRequestError) as info:
        require_parser(tools, "")
    assert info.value.param == "tool_choice"
    require_parser(tools, "hermes")


def test_choice_none_keeps_tools_for_the_template_without_parsing() -> None:
    tools = parse_chat(chat(tools=[TOOL], tool_choice="none")).tools
    assert tools is not None
    assert not tools.parsed
    require_parser(tools, "")
    assert tools.template_tools() == [TOOL]


def test_history_reaches_the_template_with_object_arguments() -> None:
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "not json"}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "42"},
    ]
    req = parse_chat(chat(messages=messages, tools=[TOOL]))
    assistant, tool = req.messages[1], req.messages[2]
    assert assistant["content"] == ""
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [{"x": 1}, {}]
    assert tool == {"role": "tool", "content": "42", "tool_call_id": "a"}


def test_engine_request_carries_the_tools_and_how_to_parse() -> None:
    named = {"type": "function", "function": {"name": "f"}}
    for stream in (False, True):
        req = parse_chat(chat(tools=[TOOL], tool_choice=named, stream=stream))
        assert req.tools is not None
        spec = req.tools.engine_spec(stream)
        assert json.loads(spec.tools) == [TOOL]
        assert json.loads(spec.tool_choice) == named
        assert spec.whole_output is not stream


def call(index: int, **kw: object) -> engine_pb2.ToolCallDelta:
    return engine_pb2.ToolCallDelta(index=index, **kw)  # type: ignore[arg-type]


def test_a_whole_answer_lists_the_calls_and_null_content() -> None:
    req = parse_chat(chat(tools=[TOOL]))
    collector = Collector(req, None)
    msg = engine_pb2.GenerateResponse(finish_reason="tool_calls", content_null=True)
    msg.tool_calls.append(call(0, id="chatcmpl-tool-1", name="f", arguments='{"x": 1}'))
    assert collector.add(msg)
    (choice,) = collector.choices()
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "chatcmpl-tool-1",
            "type": "function",
            "function": {"name": "f", "arguments": '{"x": 1}'},
        }
    ]


def test_stream_frames_carry_tool_call_deltas_and_hold_back_markup() -> None:
    req = parse_chat(chat(tools=[TOOL], stream=True))
    framer = Framer(req, sse.StreamEncoder("chat", "id", 1, "m"), 3, None)
    held = framer.frame(engine_pb2.GenerateResponse(token_ids=[5]))
    assert held == b""  # the parser kept "<tool_call>" back: nothing to send
    first = engine_pb2.GenerateResponse(token_ids=[6])
    first.tool_calls.append(call(0, id="chatcmpl-tool-1", name="f"))
    more = engine_pb2.GenerateResponse(token_ids=[7], finish_reason="tool_calls")
    more.tool_calls.append(call(0, arguments='{"x": 1}'))
    deltas = [json.loads(framer.frame(m)[6:])["choices"][0] for m in (first, more)]
    assert deltas[0]["delta"] == {
        "tool_calls": [
            {"index": 0, "id": "chatcmpl-tool-1", "type": "function", "function": {"name": "f"}}
        ]
    }
    assert deltas[1]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1}'}}]
    }
    assert deltas[1]["finish_reason"] == "tool_calls"
