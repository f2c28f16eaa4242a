"""/v1/embeddings request parsing, tokenization checks and response encoding (no processes)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from scaleserve.gateway.embed_protocol import embedding_body, parse_embedding, vector_json
from scaleserve.gateway.embed_route import tokenize
from scaleserve.gateway.errors import InvalidRequestError, NotImplementedByEngineError
from scaleserve.gateway.models import Model
from scaleserve.gateway.tokenizer import ModelTokenizer

pytestmark = pytest.mark.unit

VECTOR = struct.pack("<3f", 0.5, -1.25, 3.0)


def model(task: str = "embed", max_model_len: int = 4) -> Model:
    words = WordLevel({"[UNK]": 0, "a": 1, "b": 2, "c": 3}, unk_token="[UNK]")
    tok = Tokenizer(words)
    tok.pre_tokenizer = Whitespace()
    return Model(("m", "k"), "m", max_model_len, 8, ModelTokenizer(tok, {}, ""), 0, task=task)


@pytest.mark.parametrize(
    ("value", "inputs"),
    [
        ("a b", ("a b",)),
        (["a", "b c"], ("a", "b c")),
        ([1, 2, 3], ((1, 2, 3),)),
        ([[1, 2], [3]], ((1, 2), (3,))),
    ],
)
def test_input_takes_the_four_shapes_of_openais_api(value: Any, inputs: tuple[Any, ...]) -> None:
    req = parse_embedding({"model": "m", "input": value, "user": "u"})
    assert req.inputs == inputs
    assert (req.encoding_format, req.dimensions, req.user) == ("float", None, "u")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "a"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": ["a", ""]}, "input"),
        ({"model": "m", "input": [[1], []]}, "input"),
        ({"model": "m", "input": ["a", 1]}, "input"),
        ({"model": "m", "input": [1, True]}, "input"),
        ({"model": "m", "input": [-1]}, "input"),
        ({"model": "m", "input": {"a": 1}}, "input"),
        ({"model": "m", "input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "a", "dimensions": "8"}, "dimensions"),
        ({"model": "m", "input": "a", "user": 3}, "user"),
    ],
)
def test_bad_bodies_are_400s_naming_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        parse_embedding(body)
    assert err.value.status == 400
    assert err.value.param == param


def test_vectors_encode_as_floats_or_base64_of_little_endian_float32() -> None:
    assert vector_json(VECTOR, "float") == [0.5, -1.25, 3.0]
    assert base64.b64decode(vector_json(VECTOR, "base64")) == VECTOR


def test_the_response_has_openais_shape() -> None:
    body = orjson.loads(embedding_body("m", [VECTOR, VECTOR], 7, "float"))
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.25, 3.0]},
            {"object": "embedding", "index": 1, "embedding": [0.5, -1.25, 3.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }


def test_inputs_are_tokenized_and_checked_against_the_model() -> None:
    req = parse_embedding({"model": "m", "input": ["a b", "c"]})
    assert tokenize(model(), req) == [[1, 2], [3]]
    too_long = parse_embedding({"model": "m", "input": "a b c a b"})
    with pytest.raises(InvalidRequestError) as err:
        tokenize(model(), too_long)
    assert err.value.code == "context_length_exceeded"
    outside = parse_embedding({"model": "m", "input": [1, 8]})
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        tokenize(model(), outside)


def test_a_generating_model_refuses_embeddings_as_vllms_server_does() -> None:
    req = parse_embedding({"model": "m", "input": "a"})
    with pytest.raises(NotImplementedByEngineError) as err:
        tokenize(model(task="generate"), req)
    assert err.value.status == 501
    assert err.value.message == "The model does not support Embeddings API"
