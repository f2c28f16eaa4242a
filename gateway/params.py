"""Parsing of the OpenAI parameters that shape the choices: n, logprobs, echo, logit_bias,
response_format.

Types and ranges are checked as the body decodes (request_models.py); each check here refuses
what vLLM's OpenAI server refuses, with the same `param`, so a client sees one behaviour
whichever of the two serves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.request_models import ResponseFormat, Sampled

LOGIT_BIAS_LIMIT = 100.0


@dataclass(frozen=True, slots=True)
class Structured:
    """A decoding constraint: kind is "json_object" or "json_schema" (value: the schema)."""

    kind: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class ChoiceParams:
    n: int = 1
    logprobs: int | None = None  # top candidates per generated token; None: no logprobs
    echo: bool = False  # completions: the prompt (and its logprobs) precede the answer
    logit_bias: tuple[tuple[int, float], ...] = ()
    structured: Structured | None = None


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def parse_n(body: Sampled) -> int:
    if body.best_of is not None and body.best_of != 1:
        raise _invalid("only best_of=1 is supported", "best_of", "unsupported_value")
    return body.n or 1


def chat_logprobs(want: bool | None, top: int | None) -> int | None:
    """`logprobs` (bool) and `top_logprobs` (0-20) of a chat request."""
    if top and not want:
        raise _invalid("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
    return (top or 0) if want else None


def logit_bias(raw: dict[int, float] | None) -> tuple[tuple[int, float], ...]:
    """Token id -> bias, clamped to [-100, 100] as vLLM clamps it."""
    if not raw:
        return ()
    limit = LOGIT_BIAS_LIMIT
    return tuple((token, min(limit, max(-limit, bias))) for token, bias in raw.items())


def response_format(fmt: ResponseFormat | None) -> Structured | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return Structured("json_object")
    if fmt.type == "json_schema":
        spec = fmt.json_schema
        if spec is None:
            raise _invalid(
                "When response_format type is 'json_schema', the 'json_schema' field must be "
                "provided.",
                "response_format",
            )
        if spec.schema is None:
            raise _invalid("'json_schema.schema' must be an object", "response_format")
        return Structured("json_schema", orjson.dumps(spec.schema).decode())
    raise _invalid(
        "response_format type must be 'text', 'json_object' or 'json_schema'",
        "response_format",
        "unsupported_value",
    )
