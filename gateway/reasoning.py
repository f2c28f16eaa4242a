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

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


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


def parse_reasoning(data: dict[str, Any]) -> ReasoningParams:
    include = data.get("include_reasoning", True)
    if not isinstance(include, bool):
        raise InvalidRequestError(
            "'include_reasoning' must be a boolean", param="include_reasoning", code="invalid_type"
        )
    effort = data.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        raise InvalidRequestError(
            f"'reasoning_effort' must be one of {', '.join(EFFORTS)}",
            param="reasoning_effort",
            code="invalid_value",
        )
    if data.get("thinking_token_budget") is not None:
        raise InvalidRequestError(
            "thinking_token_budget is not supported",
            param="thinking_token_budget",
            code="unsupported_value",
        )
    if include and effort is None:
        return PLAIN
    return ReasoningParams(include, effort)


def message_fields(reasoning: str | None) -> dict[str, Any]:
    """A message's or delta's reasoning: `reasoning_content` (as DeepSeek's API and most clients
    read it) and `reasoning` (as vLLM's server sends it)."""
    return {"reasoning_content": reasoning, "reasoning": reasoning}
