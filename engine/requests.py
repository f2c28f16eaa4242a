"""Validation of Generate requests: protocol message -> prompt and vLLM sampling arguments.

Pure: no vLLM import. Every rejection is an InvalidRequestError naming the offending field as the
protocol spells it (`prompt_token_ids`, `sampling.temperature`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scaleserve.engine.errors import InvalidRequestError
from scaleserve.engine.proto import engine_pb2

MAX_REQUEST_ID_LEN = 256
MAX_STOP_STRINGS = 16
MAX_N = 128
MAX_LOGIT_BIAS = 300


@dataclass(frozen=True)
class Limits:
    """What the loaded model allows; requests are checked against it."""

    vocab_size: int
    max_model_len: int
    max_logprobs: int = 20


@dataclass(frozen=True)
class PreparedRequest:
    request_id: str
    prompt: dict[str, Any]  # a vLLM TokensPrompt or TextPrompt
    prompt_len: int | None  # None for text prompts (the engine tokenizes)
    sampling: dict[str, Any]  # keyword arguments for vllm.SamplingParams


def prepare(request: engine_pb2.GenerateRequest, limits: Limits) -> PreparedRequest:
    if len(request.request_id) > MAX_REQUEST_ID_LEN:
        raise InvalidRequestError("request_id", f"longer than {MAX_REQUEST_ID_LEN} characters")
    kind = request.WhichOneof("prompt")
    prompt: dict[str, Any]
    prompt_len: int | None = None
    if kind == "prompt_token_ids":
        ids = list(request.prompt_token_ids.ids)
        _check_prompt_ids(ids, limits)
        prompt = {"prompt_token_ids": ids}
        prompt_len = len(ids)
    elif kind == "prompt_text":
        if not request.prompt_text:
            raise InvalidRequestError("prompt_text", "must not be empty")
        prompt = {"prompt": request.prompt_text}
    else:
        raise InvalidRequestError("prompt", "empty: set prompt_token_ids or prompt_text")
    sampling = sampling_kwargs(request.sampling, limits)
    return PreparedRequest(request.request_id, prompt, prompt_len, sampling)


def _check_prompt_ids(ids: list[int], limits: Limits) -> None:
    if not ids:
        raise InvalidRequestError("prompt_token_ids", "must not be empty")
    if len(ids) >= limits.max_model_len:
        raise InvalidRequestError(
            "prompt_token_ids",
            f"prompt of {len(ids)} tokens leaves no room to generate within "
            f"max_model_len {limits.max_model_len}",
        )
    for index, token in enumerate(ids):
        if not 0 <= token < limits.vocab_size:
            raise InvalidRequestError(
                f"prompt_token_ids[{index}]",
                f"token id {token} is outside the vocabulary [0, {limits.vocab_size})",
            )


def sampling_kwargs(p: engine_pb2.SamplingParams, limits: Limits) -> dict[str, Any]:
    """vllm.SamplingParams keyword arguments for the protocol's sampling parameters."""
    out: dict[str, Any] = {"ignore_eos": p.ignore_eos}
    if p.HasField("temperature"):
        temperature = p.temperature
        _check(0.0 <= temperature <= 2.0, "temperature", f"must be in [0, 2], got {temperature}")
        out["temperature"] = p.temperature
    if p.HasField("top_p"):
        _check(0.0 < p.top_p <= 1.0, "top_p", f"must be in (0, 1], got {p.top_p}")
        out["top_p"] = p.top_p
    if p.HasField("top_k"):
        _check(p.top_k >= -1, "top_k", f"must be -1, 0 or >= 1, got {p.top_k}")
        out["top_k"] = 0 if p.top_k == -1 else p.top_k
    if p.HasField("max_tokens"):
        _check(p.max_tokens >= 1, "max_tokens", f"must be >= 1, got {p.max_tokens}")
        out["max_tokens"] = p.max_tokens
    else:
        out["max_tokens"] = None  # up to max_model_len
    if p.HasField("min_tokens"):
        _check(p.min_tokens >= 0, "min_tokens", f"must be >= 0, got {p.min_tokens}")
        if p.HasField("max_tokens"):
            _check(p.min_tokens <= p.max_tokens, "min_tokens", "must not exceed max_tokens")
        out["min_tokens"] = p.min_tokens
    if p.stop:
        _check(len(p.stop) <= MAX_STOP_STRINGS, "stop", f"at most {MAX_STOP_STRINGS} strings")
        for index, text in enumerate(p.stop):
            _check(bool(text), f"stop[{index}]", "must not be empty")
        out["stop"] = list(p.stop)
    if p.stop_token_ids:
        for index, token in enumerate(p.stop_token_ids):
            _check(
                0 <= token < limits.vocab_size,
                f"stop_token_ids[{index}]",
                f"token id {token} is outside the vocabulary [0, {limits.vocab_size})",
            )
        out["stop_token_ids"] = list(p.stop_token_ids)
    if p.HasField("seed"):
        out["seed"] = p.seed
    if p.HasField("repetition_penalty"):
        _check(p.repetition_penalty > 0, "repetition_penalty", "must be > 0")
        out["repetition_penalty"] = p.repetition_penalty
    for name in ("presence_penalty", "frequency_penalty"):
        if p.HasField(name):
            value = getattr(p, name)
            _check(-2.0 <= value <= 2.0, name, f"must be in [-2, 2], got {value}")
            out[name] = value
    for name in ("logprobs", "prompt_logprobs"):
        if p.HasField(name):
            count = getattr(p, name)
            top = limits.max_logprobs
            _check(0 <= count <= top, name, f"must be in [0, {top}], got {count}")
            out[name] = count
    if p.HasField("n"):
        _check(1 <= p.n <= MAX_N, "n", f"must be in [1, {MAX_N}], got {p.n}")
        out["n"] = p.n
    if p.logit_bias:
        out["logit_bias"] = _logit_bias(p.logit_bias, limits)
    if p.HasField("structured_output"):
        out["structured_outputs"] = structured_output_kwargs(p.structured_output)
    return out


def _logit_bias(bias: Any, limits: Limits) -> dict[int, float]:
    _check(len(bias) <= MAX_LOGIT_BIAS, "logit_bias", f"at most {MAX_LOGIT_BIAS} entries")
    for token in bias:
        _check(
            0 <= token < limits.vocab_size,
            "logit_bias",
            f"token id {token} is outside the vocabulary [0, {limits.vocab_size})",
        )
    return {int(token): min(100.0, max(-100.0, value)) for token, value in bias.items()}


def structured_output_kwargs(s: engine_pb2.StructuredOutput) -> dict[str, Any]:
    """vllm.sampling_params.StructuredOutputsParams keyword arguments."""
    kind = s.WhichOneof("kind")
    if kind == "json_object":
        _check(s.json_object, "structured_output.json_object", "must be true when set")
        return {"json_object": True}
    if kind == "json_schema":
        try:
            schema = json.loads(s.json_schema)
        except ValueError as exc:
            raise InvalidRequestError(
                "sampling.structured_output.json_schema", f"is not JSON: {exc}"
            ) from None
        _check(isinstance(schema, dict), "structured_output.json_schema", "must be an object")
        return {"json": schema}
    if kind in ("regex", "grammar"):
        _check(bool(getattr(s, kind)), f"structured_output.{kind}", "must not be empty")
        return {kind: getattr(s, kind)}
    raise InvalidRequestError("sampling.structured_output", "set one kind of constraint")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise InvalidRequestError(f"sampling.{name}", message)
