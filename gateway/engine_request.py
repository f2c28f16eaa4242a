"""A parsed request's sampling settings as the engine protocol's SamplingParams."""

from __future__ import annotations

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.protocol import GenerationRequest

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
