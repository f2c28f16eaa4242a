"""/v1/embeddings: the request body parsed once, at the edge, and the response encoded.

`input` takes the four shapes OpenAI's API does: a string, a list of strings, a list of token
ids, a list of lists of token ids. Vectors arrive from the engine as little-endian float32
bytes, which are already the `base64` encoding's payload; `float` decodes them once.
"""

from __future__ import annotations

import base64
import sys
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from scaleserve.gateway.errors import InvalidRequestError

ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # OpenAI's limit on one request's inputs
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


def _invalid(message: str, param: str, code: str = "invalid_type") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _token_ids(value: list[Any]) -> tuple[int, ...]:
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise _invalid(INPUT_TYPES, "input")
    if any(t < 0 for t in value):
        raise _invalid("token ids in 'input' must be >= 0", "input", "invalid_value")
    return tuple(value)


def _inputs(value: Any) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(value, str):
        items: tuple[str | tuple[int, ...], ...] = (value,)
    elif not isinstance(value, list) or not value:
        if isinstance(value, list):
            raise _invalid("'input' must not be empty", "input", "invalid_value")
        raise _invalid(INPUT_TYPES, "input")
    elif all(isinstance(v, str) for v in value):
        items = tuple(value)
    elif all(isinstance(v, list) for v in value):
        items = tuple(_token_ids(v) for v in value)
    else:
        items = (_token_ids(value),)
    if len(items) > MAX_INPUTS:
        raise _invalid(f"'input' may hold at most {MAX_INPUTS} items", "input", "invalid_value")
    for item in items:
        if len(item) == 0:
            raise _invalid("'input' must not contain empty items", "input", "invalid_value")
    return items


def parse_embedding(data: dict[str, Any]) -> EmbeddingRequest:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    if "input" not in data:
        raise InvalidRequestError(
            "you must provide an input parameter", param="input", code="missing_required_parameter"
        )
    encoding = data.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ENCODINGS:
        raise _invalid(
            f"'encoding_format' must be one of {', '.join(ENCODINGS)}",
            "encoding_format",
            "invalid_value",
        )
    dimensions = data.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        raise _invalid("'dimensions' must be an integer", "dimensions")
    if dimensions is not None and dimensions < 1:
        raise _invalid("'dimensions' must be >= 1", "dimensions", "invalid_value")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("'user' must be a string", "user")
    return EmbeddingRequest(model, _inputs(data.get("input")), encoding, dimensions, user)


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
