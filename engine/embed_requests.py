"""Validation of Embed requests: protocol message -> token-id lists and pooling arguments.

Pure: no vLLM import. Rejections name the protocol field (`inputs[2]`, `dimensions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaleserve.engine.errors import InvalidRequestError
from scaleserve.engine.proto import engine_pb2
from scaleserve.engine.requests import MAX_REQUEST_ID_LEN, Limits

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one embeddings request


@dataclass(frozen=True)
class PreparedEmbed:
    request_id: str
    inputs: list[list[int]]
    dimensions: int | None


def prepare_embed(request: engine_pb2.EmbedRequest, limits: Limits) -> PreparedEmbed:
    if len(request.request_id) > MAX_REQUEST_ID_LEN:
        raise InvalidRequestError("request_id", f"longer than {MAX_REQUEST_ID_LEN} characters")
    if not request.inputs:
        raise InvalidRequestError("inputs", "must not be empty")
    if len(request.inputs) > MAX_INPUTS:
        raise InvalidRequestError("inputs", f"at most {MAX_INPUTS} inputs per call")
    inputs = []
    for index, item in enumerate(request.inputs):
        ids = list(item.ids)
        field = f"inputs[{index}]"
        if not ids:
            raise InvalidRequestError(field, "must not be empty")
        # A pooling request produces no tokens: the whole context is the input's.
        if len(ids) > limits.max_model_len:
            raise InvalidRequestError(
                field,
                f"{len(ids)} tokens exceed max_model_len {limits.max_model_len}",
            )
        if min(ids) < 0 or max(ids) >= limits.vocab_size:
            raise InvalidRequestError(
                field, f"token ids must be in the vocabulary [0, {limits.vocab_size})"
            )
        inputs.append(ids)
    dimensions = None
    if request.HasField("dimensions"):
        if request.dimensions < 1:
            raise InvalidRequestError("dimensions", f"must be >= 1, got {request.dimensions}")
        dimensions = request.dimensions
    return PreparedEmbed(request.request_id, inputs, dimensions)
