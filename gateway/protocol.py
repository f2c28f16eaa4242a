"""OpenAI request bodies parsed once, at the edge, into frozen request objects.

Validation is hand-written so that every malformed or out-of-range field becomes a 400 with the
offending `param`, in the words OpenAI uses, and nothing unexpected reaches an engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from scaleserve.gateway import params
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.params import ChoiceParams
from scaleserve.gateway.reasoning import PLAIN, ReasoningParams, parse_reasoning
from scaleserve.gateway.tools import ToolParams, message_tool_fields, parse_tools

MAX_STOP = 4
MAX_SEED = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A parsed /v1/completions or /v1/chat/completions body.

    kind: "completion" or "chat". prompt: text or token ids (completions); messages (chat).
    """

    kind: str
    model: str
    sampling: Sampling
    stream: bool
    include_usage: bool
    choices: ChoiceParams = field(default_factory=ChoiceParams)
    continuous_usage: bool = False  # stream_options.continuous_usage_stats: usage on every chunk
    prompt: str | tuple[int, ...] = ""
    messages: tuple[dict[str, Any], ...] = ()
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    user: str | None = None
    tools: ToolParams | None = None
    reasoning: ReasoningParams = PLAIN


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(
    data: dict[str, Any], name: str, lo: float, hi: float, *, lo_open: bool = False
) -> float | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InvalidRequestError(f"'{name}' must be a number", param=name, code="invalid_type")
    if v > hi or v < lo or (lo_open and v == lo):
        bound = f"> {lo}" if lo_open else f">= {lo}"
        raise InvalidRequestError(
            f"{v} is out of range for '{name}': must be {bound} and <= {hi}",
            param=name,
            code="invalid_value",
        )
    return float(v)


def _integer(data: dict[str, Any], name: str, lo: int, hi: int = 2**31 - 1) -> int | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _is_int(v):
        raise InvalidRequestError(f"'{name}' must be an integer", param=name, code="invalid_type")
    if not lo <= v <= hi:
        raise InvalidRequestError(
            f"{v} is out of range for '{name}': must be >= {lo} and <= {hi}",
            param=name,
            code="invalid_value",
        )
    return int(v)


def _boolean(data: dict[str, Any], name: str, default: bool) -> bool:
    v = data.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidRequestError(f"'{name}' must be a boolean", param=name, code="invalid_type")
    return v


def _stop(data: dict[str, Any]) -> tuple[str, ...]:
    v = data.get("stop")
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise InvalidRequestError("'stop' must be a string or a list of strings", param="stop")
    if len(v) > MAX_STOP:
        raise InvalidRequestError(f"'stop' may hold at most {MAX_STOP} sequences", param="stop")
    if any(s == "" for s in v):
        raise InvalidRequestError("'stop' sequences must not be empty", param="stop")
    return tuple(v)


def _reject_unsupported(data: dict[str, Any]) -> None:
    if data.get("suffix"):
        raise InvalidRequestError(
            "suffix is not supported", param="suffix", code="unsupported_value"
        )


CHOICE_FIELDS = frozenset(
    {"n", "best_of", "logprobs", "top_logprobs", "echo", "logit_bias", "response_format"}
)
PLAIN_CHOICES = ChoiceParams()


def _choices(data: dict[str, Any], kind: str) -> ChoiceParams:
    if CHOICE_FIELDS.isdisjoint(data):  # the common request: one plain choice
        return PLAIN_CHOICES
    if kind == "chat":
        logprobs = params.chat_logprobs(data)
        echo = False
    else:
        logprobs = params.completion_logprobs(data)
        echo = _boolean(data, "echo", False)
    return ChoiceParams(
        n=params.parse_n(data),
        logprobs=logprobs,
        echo=echo,
        logit_bias=params.logit_bias(data),
        structured=params.response_format(data),
    )


def _sampling(data: dict[str, Any]) -> Sampling:
    max_tokens = _integer(data, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens", 1)
    else:
        _integer(data, "max_tokens", 1)
    top_k = _integer(data, "top_k", -1)
    if top_k == 0:
        top_k = -1
    stop_token_ids = data.get("stop_token_ids") or []
    if not isinstance(stop_token_ids, list) or not all(
        _is_int(t) and t >= 0 for t in stop_token_ids
    ):
        raise InvalidRequestError(
            "'stop_token_ids' must be a list of token ids", param="stop_token_ids"
        )
    return Sampling(
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 0.0, 2.0),
        top_p=_number(data, "top_p", 0.0, 1.0, lo_open=True),
        top_k=top_k,
        seed=_integer(data, "seed", -MAX_SEED - 1, MAX_SEED),
        stop=_stop(data),
        stop_token_ids=tuple(stop_token_ids),
        presence_penalty=_number(data, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_number(data, "frequency_penalty", -2.0, 2.0),
        repetition_penalty=_number(data, "repetition_penalty", 0.0, 10.0, lo_open=True),
        min_tokens=_integer(data, "min_tokens", 0),
        ignore_eos=_boolean(data, "ignore_eos", False),
    )


def _common(data: dict[str, Any], kind: str) -> dict[str, Any]:
    """The GenerationRequest fields both endpoints share."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    _reject_unsupported(data)
    stream = _boolean(data, "stream", False)
    include_usage = continuous_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise InvalidRequestError(
                "stream_options is only allowed when stream is true", param="stream_options"
            )
        if not isinstance(options, dict):
            raise InvalidRequestError("'stream_options' must be an object", param="stream_options")
        include_usage = _boolean(options, "include_usage", False)
        continuous_usage = _boolean(options, "continuous_usage_stats", False)
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequestError("'user' must be a string", param="user")
    sampling = _sampling(data)
    choices = _choices(data, kind)
    if choices.n > 1 and sampling.temperature == 0:
        raise InvalidRequestError(
            f"n must be 1 when using greedy sampling, got {choices.n}.", param="n"
        )
    return {
        "model": model,
        "sampling": sampling,
        "stream": stream,
        "include_usage": include_usage,
        "continuous_usage": continuous_usage,
        "choices": choices,
        "user": user,
    }


def parse_completion(data: dict[str, Any]) -> GenerationRequest:
    common = _common(data, "completion")
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        parsed: str | tuple[int, ...] = prompt
    elif isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        parsed = tuple(prompt)
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise InvalidRequestError(
            "only one prompt per request is supported", param="prompt", code="unsupported_value"
        )
    elif prompt is None:
        raise InvalidRequestError(
            "you must provide a prompt", param="prompt", code="missing_required_parameter"
        )
    else:
        raise InvalidRequestError(
            "'prompt' must be a string or a list of token ids", param="prompt", code="invalid_type"
        )
    if parsed == "" or parsed == ():
        raise InvalidRequestError(
            "'prompt' must not be empty", param="prompt", code="invalid_value"
        )
    return GenerationRequest(kind="completion", prompt=parsed, **common)


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else None
                raise InvalidRequestError(
                    f"only text content parts are supported (this endpoint serves a text-only "
                    f"model), got {kind!r}",
                    param=f"messages[{index}].content",
                    code="unsupported_value",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError(
                    "a text content part needs a string 'text'", param=f"messages[{index}].content"
                )
            parts.append(text)
        return "\n".join(parts)  # as vLLM's server joins text parts
    raise InvalidRequestError(
        "message content must be a string or a list of text parts",
        param=f"messages[{index}].content",
        code="invalid_type",
    )


ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def parse_chat(data: dict[str, Any]) -> GenerationRequest:
    common = _common(data, "chat")
    raw = data.get("messages")
    if raw is None:
        raise InvalidRequestError(
            "you must provide messages", param="messages", code="missing_required_parameter"
        )
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError(
            "'messages' must be a non-empty list", param="messages", code="invalid_value"
        )
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidRequestError("each message must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"invalid role {role!r}: expected one of {', '.join(sorted(ROLES))}",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        messages.append({"role": role, "content": _content(m, i), **message_tool_fields(m, i)})
    kwargs = data.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InvalidRequestError(
            "'chat_template_kwargs' must be an object", param="chat_template_kwargs"
        )
    return GenerationRequest(
        kind="chat",
        messages=tuple(messages),
        add_generation_prompt=_boolean(data, "add_generation_prompt", True),
        continue_final_message=_boolean(data, "continue_final_message", False),
        chat_template_kwargs=kwargs,
        tools=parse_tools(data),
        reasoning=parse_reasoning(data),
        **common,
    )
