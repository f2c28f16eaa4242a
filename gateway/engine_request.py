"""A parsed generation request as the engine's GenerateRequest: the model's checks, the
prompt's token ids (templated and tokenized), the length checks and the sampling settings."""

from __future__ import annotations

from typing import Any

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.deadlines import CURRENT_FLOW
from scaleserve.gateway.errors import InvalidRequestError, NotImplementedByEngineError
from scaleserve.gateway.models import Model
from scaleserve.gateway.protocol import GenerationRequest
from scaleserve.gateway.tools import require_parser


def prepare(
    req: GenerationRequest, model: Model, request_id: str
) -> tuple[list[int], engine_pb2.GenerateRequest]:
    """Tokenize, check lengths, and build the engine request for `model` (the one the request's
    name resolved to). The model is recorded on the request's flow, so that dispatch routes to
    its replicas."""
    if model.task != "generate":
        api = "Chat Completions" if req.kind == "chat" else "Completions"
        raise NotImplementedByEngineError(f"The model does not support {api} API")
    flow = CURRENT_FLOW.get()
    if flow is not None:
        flow.model = model.key
    tools = req.tools
    if tools is not None:
        require_parser(tools, model.tool_call_parser)
    ids, thinking = prompt_ids(req, model)
    check_length(req, model.max_model_len, len(ids))
    request = engine_pb2.GenerateRequest(
        request_id=request_id,
        prompt_token_ids=engine_pb2.TokenIds(ids=ids),
        sampling=sampling_params(req, model.vocab_size),
    )
    if tools is not None and tools.parsed:
        request.tool_calling.CopyFrom(tools.engine_spec(req.stream))
    if req.kind == "chat" and model.reasoning_parser:
        request.reasoning.CopyFrom(req.reasoning.engine_spec(thinking, req.stream))
    return ids, request


def prompt_ids(req: GenerationRequest, model: Model) -> tuple[list[int], dict[str, Any] | None]:
    """The prompt's token ids (a chat templated first) and the template's thinking switch."""
    tok = model.tokenizer
    if req.kind == "chat":
        extra = thinking = req.reasoning.template_kwargs(req.chat_template_kwargs)
        if req.tools is not None:
            extra = {**(extra or {}), "tools": req.tools.template_tools()}
        ids = tok.encode_chat(
            req.messages, req.add_generation_prompt, req.continue_final_message, extra
        )
        return ids, thinking
    if isinstance(req.prompt, str):
        return tok.encode(req.prompt), None
    ids = list(req.prompt)
    if model.vocab_size and max(ids) >= model.vocab_size:
        raise InvalidRequestError(
            f"prompt token ids must be below the vocabulary size {model.vocab_size}",
            param="prompt",
            code="invalid_value",
        )
    return ids, None


def check_length(req: GenerationRequest, limit: int, prompt_tokens: int) -> None:
    """The prompt and the completion asked for within the model's context (0: unknown)."""
    if not limit:
        return
    if prompt_tokens >= limit:
        raise InvalidRequestError(
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"has {prompt_tokens} tokens, leaving no room for a completion.",
            param="messages" if req.kind == "chat" else "prompt",
            code="context_length_exceeded",
        )
    max_tokens = req.sampling.max_tokens
    if max_tokens is not None and prompt_tokens + max_tokens > limit:
        raise InvalidRequestError(
            f"This model's maximum context length is {limit} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion). Please reduce the prompt or max_tokens.",
            param="max_tokens",
            code="context_length_exceeded",
        )


OPTIONAL_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "min_tokens",
)


def sampling_params(req: GenerationRequest, vocab_size: int) -> engine_pb2.SamplingParams:
    s = req.sampling
    if vocab_size and any(t >= vocab_size for t in s.stop_token_ids):
        raise InvalidRequestError(
            "stop_token_ids must be inside the vocabulary",
            param="stop_token_ids",
            code="invalid_value",
        )
    sp = engine_pb2.SamplingParams(
        stop=s.stop, stop_token_ids=s.stop_token_ids, ignore_eos=s.ignore_eos
    )
    for name in OPTIONAL_FIELDS:
        value = getattr(s, name)
        if value is not None:
            setattr(sp, name, value)
    c = req.choices
    if c.n != 1:
        sp.n = c.n
    if c.logprobs is not None:
        sp.logprobs = c.logprobs
        if c.echo:
            sp.prompt_logprobs = c.logprobs
    if c.logit_bias:
        bad = [t for t, _ in c.logit_bias if t < 0 or (vocab_size and t >= vocab_size)]
        if bad:
            raise InvalidRequestError(
                f"token_id(s) {bad} in logit_bias contain out-of-vocab token ids",
                param="logit_bias",
                code="invalid_value",
            )
        sp.logit_bias.update(dict(c.logit_bias))
    if c.structured is not None:
        if c.structured.kind == "json_object":
            sp.structured_output.json_object = True
        else:
            sp.structured_output.json_schema = c.structured.value
    return sp
