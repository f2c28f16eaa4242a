"""Embed request validation and the engine's embed setting (no vLLM)."""

from __future__ import annotations

import argparse

import pytest

from scaleserve.engine.embed_requests import prepare_embed
from scaleserve.engine.engine_args import engine_args_kwargs
from scaleserve.engine.errors import InvalidRequestError, SettingsError
from scaleserve.engine.proto import engine_pb2
from scaleserve.engine.requests import Limits
from scaleserve.engine.settings import EngineSettings, add_arguments

pytestmark = pytest.mark.unit

LIMITS = Limits(vocab_size=10, max_model_len=4)


def request(*inputs: list[int], **fields: int) -> engine_pb2.EmbedRequest:
    return engine_pb2.EmbedRequest(
        request_id="r", inputs=[engine_pb2.TokenIds(ids=ids) for ids in inputs], **fields
    )


def test_a_batch_is_prepared_in_order() -> None:
    prepared = prepare_embed(request([1, 2, 3, 4], [9], dimensions=2), LIMITS)
    assert prepared.inputs == [[1, 2, 3, 4], [9]]
    assert prepared.dimensions == 2


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (request(), "inputs"),
        (request([1], []), "inputs[1]"),
        (request([1, 2, 3, 4, 5]), "inputs[0]"),
        (request([10]), "inputs[0]"),
        (request([1], dimensions=0), "dimensions"),
    ],
)
def test_invalid_requests_name_the_field(req: engine_pb2.EmbedRequest, field: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        prepare_embed(req, LIMITS)
    assert err.value.field == field


def parse(argv: list[str], env: dict[str, str] | None = None) -> EngineSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return EngineSettings.load(parser.parse_args(argv), env or {})


def test_task_embed_selects_vllms_pooling_runner() -> None:
    assert parse(["--model", "/m"]).task == "generate"
    assert "runner" not in engine_args_kwargs(parse(["--model", "/m"]))
    settings = parse(["--model", "/m"], {"SCALESERVE_ENGINE_TASK": "embed"})
    assert engine_args_kwargs(settings)["runner"] == "pooling"
    with pytest.raises(SettingsError, match="tool-call-parser"):
        parse(["--model", "/m", "--task", "embed", "--tool-call-parser", "hermes"])
    with pytest.raises(SettingsError, match="SCALESERVE_ENGINE_TASK"):
        parse(["--model", "/m"], {"SCALESERVE_ENGINE_TASK": "classify"})
