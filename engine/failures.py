"""Failure mapping: an exception raised while vLLM ran a call -> its outcome label and error.

The label goes to the request metrics; the error (an EngineError) decides the gRPC status the
caller gets (`errors.status_for`). vLLM's validation errors name vLLM's parameter, which is
translated back to the protocol field the caller set.
"""

from __future__ import annotations

import logging

from vllm.exceptions import VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError

from scaleserve.engine.embed_requests import PreparedEmbed
from scaleserve.engine.errors import CoreDeadError, EngineError, InvalidRequestError
from scaleserve.engine.lifecycle import Runtime
from scaleserve.engine.requests import PreparedRequest

log = logging.getLogger(__name__)

PROMPT_PARAMETERS = {None, "", "prompt", "input_tokens", "prompt_token_ids"}


def failure(runtime: Runtime, exc: Exception, field: str, what: str) -> tuple[str, EngineError]:
    """The outcome label and the error of a call that raised `exc` (`field`: the request field
    a VLLMValidationError names); an unexpected exception while the core is dead is UNAVAILABLE."""
    if isinstance(exc, EngineDeadError):
        return "unavailable", CoreDeadError("the engine core process died")
    if isinstance(exc, VLLMValidationError):
        return "invalid", InvalidRequestError(field, str(exc))
    if runtime.engine_dead:
        return "unavailable", CoreDeadError("the engine core process died")
    log.exception("%s failed", what)
    return "error", EngineError(f"{type(exc).__name__}: {exc}")


def generate_failure(
    runtime: Runtime, exc: Exception, prepared: PreparedRequest, what: str
) -> tuple[str, EngineError]:
    """`failure` for a Generate call."""
    field = generate_field(exc, prepared) if isinstance(exc, VLLMValidationError) else ""
    return failure(runtime, exc, field, what)


def embed_failure(
    runtime: Runtime, exc: Exception, prepared: PreparedEmbed, what: str
) -> tuple[str, EngineError]:
    """`failure` for an Embed call."""
    field = embed_field(exc, prepared) if isinstance(exc, VLLMValidationError) else ""
    return failure(runtime, exc, field, what)


def generate_field(exc: VLLMValidationError, prepared: PreparedRequest) -> str:
    """The protocol field a vLLM validation error is about."""
    if exc.parameter in PROMPT_PARAMETERS:
        return "prompt_text" if prepared.prompt_len is None else "prompt_token_ids"
    return f"sampling.{exc.parameter}"


def embed_field(exc: VLLMValidationError, prepared: PreparedEmbed) -> str:
    """The Embed field a vLLM validation error is about (vLLM names no parameter for its
    matryoshka checks, the only pooling parameter a request sets)."""
    if not exc.parameter and prepared.dimensions is not None:
        return "dimensions"
    if exc.parameter in PROMPT_PARAMETERS:
        return "inputs"
    return str(exc.parameter)
