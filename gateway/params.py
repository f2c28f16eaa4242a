"""Parsing of the OpenAI parameters that shape the choices: n, logprobs, echo, logit_bias,
response_format.

Each check refuses what vLLM's OpenAI server refuses, with the same `param`, so a client sees
one behaviour whichever of the two serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from scaleserve.gateway.errors import InvalidRequestError

MAX_N = 128
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_n(data: dict[str, Any]) -> int:
    n = data.get("n")
    if n is None:
        return 1
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise _invalid(f"'n' must be an integer in [1, {MAX_N}]", "n")
    best_of = data.get("best_of")
    if best_of is not None and best_of != 1:
        raise _invalid("only best_of=1 is supported", "best_of", "unsupported_value")
    return int(n)


def chat_logprobs(data: dict[str, Any]) -> int | None:
    """`logprobs` (bool) and `top_logprobs` (0-20) of a chat request."""
    want = data.get("logprobs")
    if want is not None and not isinstance(want, bool):
        raise _invalid("'logprobs' must be a boolean", "logprobs", "invalid_type")
    top = data.get("top_logprobs")
    if top is not None:
        if not _is_int(top) or not 0 <= top <= MAX_LOGPROBS:
            raise _invalid(
                f"'top_logprobs' must be an integer in [0, {MAX_LOGPROBS}]", "top_logprobs"
            )
        if top > 0 and not want:
            raise _invalid(
                "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
            )
    return (top or 0) if want else None


def completion_logprobs(data: dict[str, Any]) -> int | None:
    """`logprobs` (an integer, 0-20) of a completions request."""
    value = data.get("logprobs")
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= MAX_LOGPROBS:
        raise _invalid(f"'logprobs' must be an integer in [0, {MAX_LOGPROBS}]", "logprobs")
    return int(value)


def logit_bias(data: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    """Token id (as a string key) -> bias in [-100, 100]; vLLM clamps out-of-range biases."""
    raw = data.get("logit_bias")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _invalid("'logit_bias' must map token ids to numbers", "logit_bias", "invalid_type")
    out = []
    for key, bias in raw.items():
        try:
            token = int(key)
        except ValueError:
            raise _invalid(f"logit_bias key {key!r} is not a token id", "logit_bias") from None
        if isinstance(bias, bool) or not isinstance(bias, int | float):
            raise _invalid("logit_bias values must be numbers", "logit_bias", "invalid_type")
        out.append((token, min(LOGIT_BIAS_LIMIT, max(-LOGIT_BIAS_LIMIT, float(bias)))))
    return tuple(out)


def response_format(data: dict[str, Any]) -> Structured | None:
    fmt = data.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return Structured("json_object")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(spec, dict):
            raise _invalid(
                "When response_format type is 'json_schema', the 'json_schema' field must be "
                "provided.",
                "response_format",
            )
        if not isinstance(schema, dict):
            raise _invalid("'json_schema.schema' must be an object", "response_format")
        return Structured("json_schema", orjson.dumps(schema).decode())
    raise _invalid(
        "response_format type must be 'text', 'json_object' or 'json_schema'",
        "response_format",
        "unsupported_value",
    )
