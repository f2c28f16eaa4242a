"""Tool calling with vLLM's own parsers: the model's output -> content and tool calls.

Parsing lives in the engine because vLLM's tool parsers (`vllm.parser.ParserManager`, the
per-format `vllm.tool_parsers`) need vLLM and its tokenizer, which the gateway image leaves out.
Each request that has tools gets vLLM's composed `Parser` (one per choice: parsers keep
stream state); `adjust_request` gives the decoding constraint for tool_choice "required" or a
named function (a JSON schema built from the tools, as vLLM's server applies it), and the
finish_reason follows vLLM's server: "tool_calls" for auto and required calls.
"""

from __future__ import annotations

import json
from typing import Any

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.exceptions import VLLMValidationError
from vllm.parser import ParserManager
from vllm.renderers.chat_utils import make_tool_call_id

from scaleserve.engine.errors import InvalidRequestError
from scaleserve.engine.proto import engine_pb2

ToolCallDelta = engine_pb2.ToolCallDelta


def parser_class(name: str | None, engine: Any) -> Any:
    """vLLM's Parser class for the tool parser `name` (None: tool calling is off). An unknown
    name, or a tokenizer the parser cannot work with, fails the engine's start."""
    if not name:
        return None
    return ParserManager.get_parser(
        tool_parser_name=name,
        enable_auto_tools=True,
        model_name=engine.model_config.model,
        tokenizer=engine.get_tokenizer(),
    )


def chat_request(spec: engine_pb2.ToolCalling) -> ChatCompletionRequest:
    """The ChatCompletionRequest vLLM's parsers read (only its tool fields matter)."""
    try:
        tools = json.loads(spec.tools)
        choice = json.loads(spec.tool_choice) if spec.tool_choice.startswith("{") else None
        return ChatCompletionRequest.model_validate(
            {
                "model": "-",
                "messages": [],
                "tools": tools,
                "tool_choice": choice or spec.tool_choice,
                "parallel_tool_calls": spec.parallel_tool_calls,
            }
        )
    except (ValueError, VLLMValidationError) as exc:
        raise InvalidRequestError("tool_calling", str(exc)) from None


class ToolCallParsing:
    """One request's parsing: its vLLM request, sampling adjustments and a parser per choice."""

    def __init__(self, parser_cls: Any, tokenizer: Any, spec: engine_pb2.ToolCalling) -> None:
        self.parser_cls = parser_cls
        self.tokenizer = tokenizer
        self.whole = spec.whole_output
        request = chat_request(spec)
        self.request = parser_cls(tokenizer, request.tools).adjust_request(request)
        choice = self.request.tool_choice
        self.named = choice is not None and not isinstance(choice, str)
        self.required = choice == "required"
        self.auto = choice == "auto"
        self.parallel = spec.parallel_tool_calls
        self._parsers: dict[int, Any] = {}
        self._texts: dict[int, list[str]] = {}
        self._ids: dict[int, list[int]] = {}
        self._streamed: set[int] = set()

    def sampling_overrides(self) -> dict[str, Any]:
        """What adjust_request changed in decoding: the tool-schema constraint of "required" and
        named choices, and keeping special tokens that some formats mark their calls with."""
        out: dict[str, Any] = {"skip_special_tokens": self.request.skip_special_tokens}
        if self.request.structured_outputs is not None:
            out["structured_outputs"] = self.request.structured_outputs
        return out

    def _parser(self, index: int) -> Any:
        parser = self._parsers.get(index)
        if parser is None:
            parser = self.parser_cls(self.tokenizer, self.request.tools)
            self._parsers[index] = parser
        return parser

    def apply(self, message: Any, prompt_ids: Any, finish_reason: str | None) -> None:
        """Rewrite one relay message (text delta, token ids) into content and tool calls."""
        i = message.index
        if self.whole:
            self._texts.setdefault(i, []).append(message.text)
            self._ids.setdefault(i, []).extend(message.token_ids)
            message.text = ""
            if finish_reason is not None:
                self._finish_whole(message, finish_reason)
            return
        delta = self._parser(i).parse_delta(
            message.text,
            list(message.token_ids),
            self.request,
            list(prompt_ids) if prompt_ids is not None else None,
            finished=finish_reason is not None,
        )
        message.text = (delta.content or "") if delta is not None else ""
        calls = list((delta.tool_calls if delta is not None else None) or ())
        if not self.parallel:
            calls = [c for c in calls if c.index == 0]
        for call in calls:
            function = call.function
            piece = ToolCallDelta(index=call.index, id=call.id or "")
            if function is not None:
                piece.name = function.name or ""
                if function.arguments is not None:
                    piece.arguments = function.arguments
            message.tool_calls.append(piece)
        if calls:
            self._streamed.add(i)
        if finish_reason == "stop" and i in self._streamed and not self.named:
            message.finish_reason = "tool_calls"

    def _finish_whole(self, message: Any, finish_reason: str) -> None:
        i = message.index
        _, content, calls = self._parser(i).parse(
            "".join(self._texts.pop(i)),
            self.request,
            enable_auto_tools=True,
            model_output_token_ids=self._ids.pop(i),
        )
        calls = list(calls or ())
        if not self.parallel:
            calls = calls[:1]
        for index, call in enumerate(calls):
            message.tool_calls.append(
                ToolCallDelta(
                    index=index,
                    id=call.id or make_tool_call_id(),
                    name=call.name,
                    arguments=call.arguments,
                )
            )
        if self.auto:
            message.text = content or ""
            message.content_null = content is None
        else:  # vLLM's server answers "required" and named choices with content ""
            message.text = content or ""
        if finish_reason == "stop" and ((self.auto and calls) or self.required):
            message.finish_reason = "tool_calls"
