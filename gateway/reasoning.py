"""Reasoning at the gateway: the request's reasoning fields checked as vLLM's server checks them,
the thinking switches handed to the chat template, and the engine's reasoning shaped as the
response's `reasoning_content` (and vLLM's `reasoning`).

Splitting reasoning from content happens in the engine (vLLM's reasoning parsers need vLLM);
the gateway asks for it on chat requests to an endpoint with a reasoning parser and relays it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.request_models import ChatBody


@dataclass(frozen=True, slots=True)
class ReasoningParams:
    include: bool = True  # include_reasoning: false drops the reasoning from the answer
    effort: str | None = None  # reasoning_effort, handed to the chat template

    def template_kwargs(self, kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        """The chat template's kwargs with the reasoning switches vLLM's server adds: the effort,
        and `enable_thinking` (false for effort "none") unless the client set it."""
        if self.effort is None:
            return kwargs
        out = {**(kwargs or {}), "reasoning_effort": self.effort}
        out.setdefault("enable_thinking", self.effort != "none")
        return out

    def engine_spec(self, kwargs: dict[str, Any] | None, stream: bool) -> engine_pb2.Reasoning:
        return engine_pb2.Reasoning(
            omit=not self.include,
            chat_template_kwargs=orjson.dumps(kwargs).decode() if kwargs else "",
            whole_output=not stream,
        )


PLAIN = ReasoningParams()


def parse_reasoning(body: ChatBody) -> ReasoningParams:
    if body.thinking_token_budget is not None:
        raise InvalidRequestError(
            "thinking_token_budget is not supported",
            param="thinking_token_budget",
            code="unsupported_value",
        )
    include = body.include_reasoning is not False
    if include and body.reasoning_effort is None:
        return PLAIN
    return ReasoningParams(include, body.reasoning_effort)


def message_fields(reasoning: str | None) -> dict[str, Any]:
    """A message's or delta's reasoning: `reasoning_content` (as DeepSeek's API and most clients
    read it) and `reasoning` (as vLLM's server sends it)."""
    return {"reasoning_content": reasoning, "reasoning": reasoning}
