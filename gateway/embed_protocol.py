"""/v1/embeddings: the request body parsed once, at the edge, and the response encoded.

The body decodes into its typed model (request_models.py). `input` takes the four shapes
OpenAI's API does: a string, a list of strings, a list of token ids, a list of lists of token
ids. Vectors arrive from the engine as little-endian float32
bytes, which are already the `base64` encoding's payload; `float` decodes them once.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.request_decode import decode
from scaleserve.gateway.request_models import MAX_INPUTS, EmbeddingBody

INPUT_TYPES = (
    "'input' must be a string, a list of strings, a list of token ids or a list of lists of "
    "token ids"
)


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str | tuple[int, ...], ...]  # text (to tokenize) or token ids, in order
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


def _invalid(message: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param="input", code=code)


def _inputs(value: str | list[Any]) -> tuple[str | tuple[int, ...], ...]:
    """The model checked each item's type (and token ids >= 0); one request holds one shape."""
    if isinstance(value, str):
        items: tuple[str | tuple[int, ...], ...] = (value,)
    elif not value:
        raise _invalid("'input' must not be empty")
    elif all(isinstance(v, str) for v in value):
        items = tuple(value)
    elif all(isinstance(v, list) for v in value):
        items = tuple(tuple(v) for v in value)
    elif all(isinstance(v, int) for v in value):
        items = (tuple(value),)
    else:
        raise _invalid(INPUT_TYPES, "invalid_type")
    if len(items) > MAX_INPUTS:
        raise _invalid(f"'input' may hold at most {MAX_INPUTS} items")
    if any(len(item) == 0 for item in items):
        raise _invalid("'input' must not contain empty items")
    return items


def parse_embedding(source: bytes | Mapping[str, Any]) -> EmbeddingRequest:
    """`source`: the body's bytes, or the body already parsed."""
    body = decode(source, EmbeddingBody)
    if not body.model:
        raise InvalidRequestError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    if body.input is None:
        raise InvalidRequestError(
            "you must provide an input parameter", param="input", code="missing_required_parameter"
        )
    return EmbeddingRequest(
        body.model, _inputs(body.input), body.encoding_format or "float", body.dimensions, body.user
    )


def vector_json(vector: bytes, encoding_format: str) -> Any:
    """One embedding as the response carries it: a list of floats, or base64 of float32 LE."""
    if encoding_format == "base64":
        return base64.b64encode(vector).decode("ascii")
    floats = array("f")
    floats.frombytes(vector)
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


def embedding_body(
    model: str, vectors: list[bytes], prompt_tokens: int, encoding_format: str
) -> bytes:
    """The response: {object: list, data: [{object: embedding, index, embedding}], model,
    usage}."""
    data = [
        {"object": "embedding", "index": index, "embedding": vector_json(v, encoding_format)}
        for index, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
