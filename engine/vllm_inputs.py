"""Request translation: a validated Generate request -> what vLLM's `generate` takes (the
rendered prompt, SamplingParams with DELTA outputs, the output parsers' extra arguments)."""

from __future__ import annotations

from typing import Any

from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

from scaleserve.engine.errors import InvalidRequestError
from scaleserve.engine.output_parsing import OutputParsing
from scaleserve.engine.requests import PreparedRequest


def sampling_params(prepared: PreparedRequest, parsing: OutputParsing | None) -> Any:
    """vLLM's SamplingParams for the request; vLLM's own checks raise InvalidRequestError."""
    kwargs = prepared.sampling
    if "structured_outputs" in kwargs:
        kwargs = {
            **kwargs,
            "structured_outputs": StructuredOutputsParams(**kwargs["structured_outputs"]),
        }
    if parsing is not None:
        kwargs = {**kwargs, **parsing.sampling_overrides()}
    try:
        return SamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)
    except VLLMValidationError as exc:
        raise InvalidRequestError(f"sampling.{exc.parameter or 'params'}", str(exc)) from exc


async def render(engine: Any, prepared: PreparedRequest) -> Any:
    """The prompt as vLLM's engine input (text prompts are tokenized here)."""
    if prepared.prompt_len is not None:  # token ids: no tokenization, no thread hop
        (engine_input,) = engine.renderer.render_cmpl([prepared.prompt])
    else:
        (engine_input,) = await engine.renderer.render_cmpl_async([prepared.prompt])
    return engine_input


def generate_kwargs(parsing: OutputParsing | None, engine_input: Any) -> dict[str, Any]:
    """Extra keyword arguments of `generate` the output parsers need (none without them)."""
    if parsing is None:
        return {}
    return parsing.generate_kwargs(list(engine_input["prompt_token_ids"]))
