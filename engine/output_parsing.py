"""The model's output -> reasoning, content and tool calls, with vLLM's own parsers.

Parsing lives in the engine because vLLM's parsers (`vllm.parser.ParserManager` composing a
`vllm.reasoning` parser and a `vllm.tool_parsers` parser) need vLLM and its tokenizer, which the
gateway image leaves out. As in vLLM's server, one composed `Parser` handles a choice (parsers
keep stream state): reasoning is split off first and tool calls are parsed from the content
part. `adjust_request` gives the decoding constraint for tool_choice "required" or a named
function (a JSON schema built from the tools, as vLLM's server applies it), and the
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


def parser_class(tool_parser: str | None, reasoning_parser: str | None, engine: Any) -> Any:
    """vLLM's composed Parser class for the named tool and reasoning parsers (None: neither is
    set). An unknown name, or a tokenizer a parser cannot work with, fails the engine's start."""
    if not tool_parser and not reasoning_parser:
        return None
    return ParserManager.get_parser(
        tool_parser_name=tool_parser or None,
        reasoning_parser_name=reasoning_parser or None,
        enable_auto_tools=bool(tool_parser),
        model_name=engine.model_config.model,
        tokenizer=engine.get_tokenizer(),
    )


def chat_request(
    tools: engine_pb2.ToolCalling | None, reasoning: engine_pb2.Reasoning | None
) -> ChatCompletionRequest:
    """The ChatCompletionRequest vLLM's parsers read (only its tool and reasoning fields)."""
    fields: dict[str, Any] = {"model": "-", "messages": []}
    try:
        if tools is not None:
            choice = json.loads(tools.tool_choice) if tools.tool_choice.startswith("{") else None
            fields["tools"] = json.loads(tools.tools)
            fields["tool_choice"] = choice or tools.tool_choice
            fields["parallel_tool_calls"] = tools.parallel_tool_calls
        if reasoning is not None:
            fields["include_reasoning"] = not reasoning.omit
            fields["chat_template_kwargs"] = template_kwargs(reasoning)
        return ChatCompletionRequest.model_validate(fields)
    except (ValueError, VLLMValidationError) as exc:
        field = "tool_calling" if tools is not None else "reasoning"
        raise InvalidRequestError(field, str(exc)) from None


def template_kwargs(reasoning: engine_pb2.Reasoning) -> dict[str, Any] | None:
    """The chat template's keyword arguments the prompt was rendered with (thinking switches
    such as `enable_thinking` tell a parser whether the output starts in reasoning)."""
    if not reasoning.chat_template_kwargs:
        return None
    value = json.loads(reasoning.chat_template_kwargs)
    if not isinstance(value, dict):
        raise InvalidRequestError("reasoning.chat_template_kwargs", "must be a JSON object")
    return value


class OutputParsing:
    """One request's parsing: its vLLM request, sampling adjustments and a parser per choice."""

    def __init__(
        self,
        parser_cls: Any,
        tokenizer: Any,
        tools: engine_pb2.ToolCalling | None,
        reasoning: engine_pb2.Reasoning | None,
    ) -> None:
        self.parser_cls = parser_cls
        self.tokenizer = tokenizer
        self.whole = (tools is not None and tools.whole_output) or (
            reasoning is not None and reasoning.whole_output
        )
        self.request = chat_request(tools, reasoning)
        self.kwargs = self.request.chat_template_kwargs
        if tools is not None:
            self.request = self._new_parser().adjust_request(self.request)
        choice = self.request.tool_choice
        self.named = choice is not None and not isinstance(choice, str)
        self.required = choice == "required"
        self.auto = tools is not None and choice == "auto"
        self.parallel = tools is None or tools.parallel_tool_calls
        self._parsers: dict[int, Any] = {}
        self._texts: dict[int, list[str]] = {}
        self._ids: dict[int, list[int]] = {}
        self._streamed: set[int] = set()

    def _new_parser(self) -> Any:
        return self.parser_cls(self.tokenizer, self.request.tools, chat_template_kwargs=self.kwargs)

    def sampling_overrides(self) -> dict[str, Any]:
        """What adjust_request changed in decoding: the tool-schema constraint of "required" and
        named choices, and keeping special tokens that some formats mark their calls with."""
        out: dict[str, Any] = {"skip_special_tokens": self.request.skip_special_tokens}
        if self.request.structured_outputs is not None:
            out["structured_outputs"] = self.request.structured_outputs
        return out

    def generate_kwargs(self, prompt_ids: list[int]) -> dict[str, Any]:
        """What vLLM's server adds to generate() with a reasoning parser: whether reasoning has
        ended at the prompt's end (structured outputs constrain only the answer) and the template
        kwargs for the engine core's own reasoning parser."""
        parser = self._parser(0)
        if parser.reasoning_parser is None:
            return {}
        return {
            "reasoning_ended": self.request.resolve_reasoning_ended(parser, prompt_ids),
            "reasoning_parser_kwargs": {"chat_template_kwargs": self.kwargs or {}},
        }

    def _parser(self, index: int) -> Any:
        parser = self._parsers.get(index)
        if parser is None:
            parser = self._new_parser()
            self._parsers[index] = parser
        return parser

    def apply(self, message: Any, prompt_ids: Any, finish_reason: str | None) -> None:
        """Rewrite one relay message (text delta, token ids) into reasoning, content and tool
        calls."""
        i = message.index
        if self.whole:
            self._texts.setdefault(i, []).append(message.text)
            self._ids.setdefault(i, []).extend(message.token_ids)
            message.text = ""
            if finish_reason is not None:
                self._finish_whole(message, prompt_ids, finish_reason)
            return
        delta = self._parser(i).parse_delta(
            message.text,
            list(message.token_ids),
            self.request,
            list(prompt_ids) if prompt_ids is not None else None,
            finished=finish_reason is not None,
        )
        message.text = (delta.content or "") if delta is not None else ""
        if delta is not None and delta.reasoning:
            message.reasoning = delta.reasoning
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

    def _finish_whole(self, message: Any, prompt_ids: Any, finish_reason: str) -> None:
        i = message.index
        parser = self._parser(i)
        if prompt_ids is not None:
            parser.set_prompt_token_ids(list(prompt_ids))
        reasoning, content, calls = parser.parse(
            "".join(self._texts.pop(i)),
            self.request,
            enable_auto_tools=True,
            model_output_token_ids=self._ids.pop(i),
        )
        if reasoning and self.request.include_reasoning:
            message.reasoning = reasoning
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
        # vLLM's server answers "required" and named choices with content "", and a message
        # whose output was all reasoning (or all calls, under auto) with content null.
        message.text = content or ""
        message.content_null = content is None and not (self.required or self.named)
        if finish_reason == "stop" and ((self.auto and calls) or self.required):
            message.finish_reason = "tool_calls"
