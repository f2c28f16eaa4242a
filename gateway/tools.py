"""Tool calling at the gateway: `tools`, `tool_choice` and `parallel_tool_calls` checked the way
vLLM's server checks them, the tools handed to the chat template, assistant `tool_calls` and
`tool` messages carried back through it, and the engine's tool-call messages shaped as OpenAI's.

Parsing the model's output into tool calls happens in the engine (vLLM's parsers need vLLM);
the gateway forwards the tool fields as JSON and relays what the engine parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.request_models import ChatBody, Message, NamedToolChoice, Tool

NAMED_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


@dataclass(frozen=True, slots=True)
class ToolParams:
    """tools as sent; choice: "none", "auto", "required" or the named function's name."""

    tools: tuple[dict[str, Any], ...]
    choice: str
    named: bool = False
    parallel: bool = True

    @property
    def parsed(self) -> bool:
        """Whether the engine parses the output into tool calls."""
        return self.choice != "none"

    def template_tools(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.tools]

    def engine_spec(self, stream: bool) -> engine_pb2.ToolCalling:
        choice = (
            orjson.dumps({"type": "function", "function": {"name": self.choice}}).decode()
            if self.named
            else self.choice
        )
        return engine_pb2.ToolCalling(
            tools=orjson.dumps(list(self.tools)).decode(),
            tool_choice=choice,
            parallel_tool_calls=self.parallel,
            whole_output=not stream,
        )


def _invalid(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_value")


def _tool(tool: Tool, index: int) -> dict[str, Any]:
    function = tool.function
    if function is None or tool.type != "function":
        raise _invalid(f"tools[{index}] must be a function tool", "tools")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"tools[{index}].function needs a name", "tools")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _invalid(f"tools[{index}].function.parameters must be an object", "tools")
    return {"type": "function", "function": function}


def _named(choice: NamedToolChoice, tools: tuple[dict[str, Any], ...]) -> str:
    function = choice.function
    if function is None:
        raise _invalid(
            f"Invalid value for `function`: `{function}` in `tool_choice`! {NAMED_USAGE}",
            "tool_choice.function",
        )
    name = function.name
    if not name:
        raise _invalid(
            f"Invalid `name` in `function`: `{name}` in `tool_choice`! {NAMED_USAGE}",
            "tool_choice.function.name",
        )
    if all(t["function"]["name"] != name for t in tools):
        raise _invalid(
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
            "tool_choice",
        )
    return name


def parse_tools(body: ChatBody) -> ToolParams | None:
    """The request's tool fields, refused in the cases vLLM's server refuses them."""
    raw, choice = body.tools, body.tool_choice
    if body.functions is not None:
        raise InvalidRequestError(
            "the deprecated functions API is not supported: use tools",
            param="functions",
            code="unsupported_value",
        )
    if raw is None:
        if choice not in (None, "none"):
            raise _invalid("When using `tool_choice`, `tools` must be set.", "tool_choice")
        return None
    if not raw:
        raise _invalid(
            "`tools` must not be an empty array. Either provide at least one tool or omit the "
            "field entirely.",
            "tools",
        )
    tools = tuple(_tool(t, i) for i, t in enumerate(raw))
    parallel = body.parallel_tool_calls is not False
    if isinstance(choice, NamedToolChoice):
        return ToolParams(tools, _named(choice, tools), named=True, parallel=parallel)
    if choice is None:
        choice = "auto"
    if choice not in ("none", "auto", "required"):
        raise _invalid(
            f'Invalid value for `tool_choice`: {choice}! Only named tools, "none", "auto" or '
            '"required" are supported.',
            "tool_choice",
        )
    return ToolParams(tools, choice, parallel=parallel)


def require_parser(params: ToolParams, parser: str) -> None:
    """As vLLM's server: any tool_choice but "none" needs a tool parser on the endpoint."""
    if not params.parsed or parser:
        return
    if params.choice == "auto":
        message = (
            '"auto" tool choice requires a tool call parser: set the endpoint\'s '
            "toolCallParser (vLLM: --enable-auto-tool-choice and --tool-call-parser)"
        )
    else:
        desc = f'function "{params.choice}"' if params.named else f'"{params.choice}"'
        message = (
            f"tool_choice={desc} requires a tool call parser: set the endpoint's "
            "toolCallParser (vLLM: --tool-call-parser)"
        )
    raise _invalid(message, "tool_choice")


def _arguments(value: Any) -> dict[str, Any]:
    """Arguments as the chat template sees them: an object (vLLM coerces anything else to {})."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def message_tool_fields(message: Message, index: int) -> dict[str, Any]:
    """What an assistant's `tool_calls` or a tool message's `tool_call_id` (and a `name`) add
    to a message handed to the chat template."""
    out: dict[str, Any] = {}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [_history_call(c, index) for c in message.tool_calls]
    if message.role == "tool" and message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _history_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise _invalid(
            "chat completions only support assistant tool_calls of type 'function'.",
            f"messages[{index}].tool_calls",
        )
    return {
        **call,
        "function": {**function, "arguments": _arguments(function.get("arguments"))},
    }


def response_calls(pieces: Any) -> list[dict[str, Any]]:
    """A finished choice's tool calls (whole, one piece each) as a message's `tool_calls`."""
    return [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments},
        }
        for p in pieces
    ]


def delta_calls(pieces: Any) -> list[dict[str, Any]]:
    """Tool-call pieces of a stream message as a chunk's `delta.tool_calls`."""
    out = []
    for p in pieces:
        item: dict[str, Any] = {"index": p.index}
        if p.id:
            item["id"] = p.id
            item["type"] = "function"
        function: dict[str, Any] = {}
        if p.name:
            function["name"] = p.name
        if p.HasField("arguments"):
            function["arguments"] = p.arguments
        if function:
            item["function"] = function
        out.append(item)
    return out
