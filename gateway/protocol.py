"""OpenAI request bodies parsed once, at the edge, into frozen request objects.

The body decodes into its typed model (request_models.py), which checks every field's type and
range; what remains here is what a type cannot say (fields that refuse each other, the batch
shapes of `prompt`, content parts), so every malformed or out-of-range field becomes a 400 with
the offending `param` and nothing unexpected reaches an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scaleserve.gateway import params
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.params import ChoiceParams
from scaleserve.gateway.reasoning import PLAIN, ReasoningParams, parse_reasoning
from scaleserve.gateway.request_decode import decode, parse_json
from scaleserve.gateway.request_models import ChatBody, CompletionBody, Message, Sampled
from scaleserve.gateway.tools import ToolParams, message_tool_fields, parse_tools

__all__ = ["GenerationRequest", "Sampling", "parse_chat", "parse_completion", "parse_json"]

Body = bytes | Mapping[str, Any]
PLAIN_CHOICES = ChoiceParams()


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


def _whole(value: int | float | None, name: str) -> int | None:
    """An integer field's value; the models let an integral float (5.0) through."""
    if value is None or isinstance(value, int):
        return value
    if not value.is_integer():
        raise InvalidRequestError(f"'{name}' must be an integer", param=name, code="invalid_type")
    return int(value)


def _sampling(body: Sampled) -> Sampling:
    max_tokens = _whole(body.max_tokens, "max_tokens")
    completion_max = _whole(body.max_completion_tokens, "max_completion_tokens")
    top_k = _whole(body.top_k, "top_k")
    stop = body.stop
    return Sampling(
        max_tokens=max_tokens if completion_max is None else completion_max,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=-1 if top_k == 0 else top_k,
        seed=_whole(body.seed, "seed"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        min_tokens=_whole(body.min_tokens, "min_tokens"),
        ignore_eos=body.ignore_eos is True,
    )


def _plain(body: CompletionBody | ChatBody) -> bool:
    """The common request: one choice, no logprobs, no constraint."""
    return (
        body.n is None
        and body.best_of is None
        and body.logprobs is None
        and body.logit_bias is None
        and body.response_format is None
    )


def _choices(body: CompletionBody | ChatBody) -> ChoiceParams:
    if isinstance(body, ChatBody):
        if _plain(body) and body.top_logprobs is None:
            return PLAIN_CHOICES
        logprobs = params.chat_logprobs(body.logprobs, body.top_logprobs)
        echo = False
    else:
        if _plain(body) and body.echo is None:
            return PLAIN_CHOICES
        logprobs, echo = body.logprobs, body.echo is True
    return ChoiceParams(
        n=params.parse_n(body),
        logprobs=logprobs,
        echo=echo,
        logit_bias=params.logit_bias(body.logit_bias),
        structured=params.response_format(body.response_format),
    )


def _common(body: CompletionBody | ChatBody) -> dict[str, Any]:
    """The GenerationRequest fields both endpoints share."""
    if not body.model:
        raise InvalidRequestError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    if body.suffix:
        raise InvalidRequestError(
            "suffix is not supported", param="suffix", code="unsupported_value"
        )
    stream = body.stream is True
    options = body.stream_options
    if options is not None and not stream:
        raise InvalidRequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    sampling = _sampling(body)
    choices = _choices(body)
    if choices.n > 1 and sampling.temperature == 0:
        raise InvalidRequestError(
            f"n must be 1 when using greedy sampling, got {choices.n}.", param="n"
        )
    return {
        "model": body.model,
        "sampling": sampling,
        "stream": stream,
        "include_usage": options is not None and options.include_usage is True,
        "continuous_usage": options is not None and options.continuous_usage_stats is True,
        "choices": choices,
        "user": body.user,
    }


def _prompt(prompt: str | list[Any] | None) -> str | tuple[int, ...]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if prompt is None:
        raise InvalidRequestError(
            "you must provide a prompt", param="prompt", code="missing_required_parameter"
        )
    if isinstance(prompt, str):
        parsed: str | tuple[int, ...] = prompt
    elif all(isinstance(t, int) for t in prompt):
        parsed = tuple(prompt)
    elif len(prompt) > 1:
        raise InvalidRequestError(
            "only one prompt per request is supported", param="prompt", code="unsupported_value"
        )
    else:
        raise InvalidRequestError(
            "'prompt' must be a string or a list of token ids", param="prompt", code="invalid_type"
        )
    if not parsed:
        raise InvalidRequestError(
            "'prompt' must not be empty", param="prompt", code="invalid_value"
        )
    return parsed


def parse_completion(source: Body) -> GenerationRequest:
    """`source`: the body's bytes, or the body already parsed."""
    body = decode(source, CompletionBody)
    common = _common(body)
    return GenerationRequest(kind="completion", prompt=_prompt(body.prompt), **common)


def _content(message: Message, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str) or part.type != "text":
            kind = None if isinstance(part, str) else part.type
            raise InvalidRequestError(
                f"only text content parts are supported (this endpoint serves a text-only "
                f"model), got {kind!r}",
                param=f"messages[{index}].content",
                code="unsupported_value",
            )
        if part.text is None:
            raise InvalidRequestError(
                "a text content part needs a string 'text'", param=f"messages[{index}].content"
            )
        parts.append(part.text)
    return "\n".join(parts)  # as vLLM's server joins text parts


def _messages(raw: list[Message] | None) -> tuple[dict[str, Any], ...]:
    if raw is None:
        raise InvalidRequestError(
            "you must provide messages", param="messages", code="missing_required_parameter"
        )
    if not raw:
        raise InvalidRequestError(
            "'messages' must be a non-empty list", param="messages", code="invalid_value"
        )
    return tuple(
        {"role": m.role, "content": _content(m, i), **message_tool_fields(m, i)}
        for i, m in enumerate(raw)
    )


def parse_chat(source: Body) -> GenerationRequest:
    """`source`: the body's bytes, or the body already parsed."""
    body = decode(source, ChatBody)
    common = _common(body)
    return GenerationRequest(
        kind="chat",
        messages=_messages(body.messages),
        add_generation_prompt=body.add_generation_prompt is not False,
        continue_final_message=body.continue_final_message is True,
        chat_template_kwargs=body.chat_template_kwargs,
        tools=parse_tools(body),
        reasoning=parse_reasoning(body),
        **common,
    )
