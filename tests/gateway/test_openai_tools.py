"""Tool calling through the official `openai` client: the gateway over real engines that parse
the tiny model's (Hermes) tool-call format with vLLM's parser. `required` and named choices
constrain decoding to the tool-call format, and `strict` tools' arguments to their schemas, so
even the random-weight model makes valid calls."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.gateway.conftest import MODEL, GatewayProcess

pytestmark = pytest.mark.gateway

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
MESSAGES: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
ARGUMENTS = {
    "get_weather": ({"city": "Paris"}, {"city": "Rome"}),
    "get_time": ({"zone": "UTC"}, {"zone": "CET"}),
}


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=120)


def assert_valid_calls(calls: Any) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function"
        assert call.id
        assert json.loads(call.function.arguments) in ARGUMENTS[call.function.name]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_choice_calls_a_tool_with_schema_valid_arguments(
    gateway: GatewayProcess, stream: bool
) -> None:
    body: Any = {
        "model": MODEL,
        "messages": MESSAGES,
        "tools": [WEATHER, CLOCK],
        "tool_choice": "required",
        "max_tokens": 80,
        "temperature": 0,
    }
    with client(gateway) as c:
        if stream:
            state = ChatCompletionStreamState()
            for chunk in c.chat.completions.create(**body, stream=True):
                state.handle_chunk(chunk)
            result = state.get_final_completion()
        else:
            result = c.chat.completions.create(**body)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert_valid_calls(choice.message.tool_calls)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_named_choice_calls_that_function(gateway: GatewayProcess, stream: bool) -> None:
    body: Any = {
        "model": MODEL,
        "messages": MESSAGES,
        "tools": [WEATHER, CLOCK],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "max_tokens": 100,
        "temperature": 0,
    }
    with client(gateway) as c:
        if stream:
            state = ChatCompletionStreamState()
            for chunk in c.chat.completions.create(**body, stream=True):
                state.handle_chunk(chunk)
            result = state.get_final_completion()
        else:
            result = c.chat.completions.create(**body)
    choice = result.choices[0]
    assert choice.finish_reason == "stop"  # OpenAI's API: a named call ends with "stop"
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 1
    assert calls[0].function.name == "get_time"
    assert_valid_calls(calls)


def test_tool_results_go_back_through_the_template(gateway: GatewayProcess) -> None:
    with client(gateway) as c:
        first = c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            tools=[WEATHER],
            tool_choice="required",
            max_tokens=80,
            temperature=0,
        )
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        turns = [
            *MESSAGES,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
        ]
        second = c.chat.completions.create(
            model=MODEL, messages=turns, tools=[WEATHER], max_tokens=8, temperature=0
        )
    # the call and its result are in the prompt: it grew by more than the question did
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10  # type: ignore[union-attr]
    assert second.choices[0].finish_reason in ("stop", "length")


def test_an_unknown_tool_choice_is_refused_naming_it(gateway: GatewayProcess) -> None:
    with client(gateway) as c, pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            tools=[WEATHER],
            tool_choice="any",
            max_tokens=4,  # type: ignore[arg-type]
        )
    assert err.value.body["param"] == "tool_choice"  # type: ignore[index]
