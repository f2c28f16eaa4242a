"""Validation of the engine protocol's sampling parameters into vLLM's keyword arguments."""

from __future__ import annotations

import pytest

from scaleserve.engine.errors import InvalidRequestError
from scaleserve.engine.proto import engine_pb2
from scaleserve.engine.requests import Limits, sampling_kwargs

pytestmark = pytest.mark.unit

LIMITS = Limits(vocab_size=512, max_model_len=1024)


def kwargs(**fields: object) -> dict:
    return sampling_kwargs(engine_pb2.SamplingParams(**fields), LIMITS)  # type: ignore[arg-type]


def test_choice_shaping_fields_pass_through() -> None:
    out = kwargs(n=2, logprobs=3, prompt_logprobs=1, logit_bias={4: 250.0, 5: -1.0})
    assert (out["n"], out["logprobs"], out["prompt_logprobs"]) == (2, 3, 1)
    assert out["logit_bias"] == {4: 100.0, 5: -1.0}


@pytest.mark.parametrize(
    ("structured", "expected"),
    [
        ({"json_object": True}, {"json_object": True}),
        ({"json_schema": '{"type": "object"}'}, {"json": {"type": "object"}}),
        ({"regex": "[a-z]+"}, {"regex": "[a-z]+"}),
    ],
)
def test_structured_output_becomes_vllm_arguments(structured: dict, expected: dict) -> None:
    out = kwargs(structured_output=engine_pb2.StructuredOutput(**structured))  # type: ignore[arg-type]
    assert out["structured_outputs"] == expected


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"n": 0}, "sampling.n"),
        ({"prompt_logprobs": 99}, "sampling.prompt_logprobs"),
        ({"logit_bias": {512: 1.0}}, "sampling.logit_bias"),
        (
            {"structured_output": engine_pb2.StructuredOutput(json_schema="{")},
            "sampling.structured_output.json_schema",
        ),
        (
            {"structured_output": engine_pb2.StructuredOutput(json_schema="[]")},
            "sampling.structured_output.json_schema",
        ),
        ({"structured_output": engine_pb2.StructuredOutput()}, "sampling.structured_output"),
    ],
)
def test_bad_fields_are_named(fields: dict, name: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        kwargs(**fields)
    assert info.value.field == name
