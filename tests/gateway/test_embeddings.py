"""/v1/embeddings: an embedding engine (`--task embed`, vLLM's pooling runner on the tiny model)
behind a gateway, compared with vLLM's own OpenAI server running the same model with the same
runner; the official openai client reads both encodings.

One embedding engine and one vLLM server for the module, started side by side.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import openai
import pytest

from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc
from tests.fixtures.engines import EngineLauncher, EngineProcess
from tests.fixtures.vllm_server import VllmServer, start_vllm_server
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess

pytestmark = pytest.mark.gateway

HIDDEN = 256  # the tiny model's hidden size: the embedding's length
TOLERANCE = 1e-4  # float32, batched differently on each server
TEXT = "The quick brown fox jumps over the lazy dog."
TEXTS = [TEXT, "Kubernetes runs containers on a cluster of nodes.", "A journey of a thousand"]
IDS = [5, 17, 42, 99, 120]
# The same inputs to both servers: every shape `input` takes, both encodings.
CASES: list[dict[str, Any]] = [
    {"input": TEXT},
    {"input": TEXTS},
    {"input": IDS},
    {"input": [IDS, [7, 8, 9], [300]]},
    {"input": TEXTS, "encoding_format": "base64"},
    {"input": TEXT, "user": "someone"},
]
# Requests both refuse, with the status both give.
REFUSED: list[tuple[dict[str, Any], int]] = [
    ({"input": "x" * 9000}, 400),  # beyond max_model_len (1024 tokens)
    ({"input": [IDS] * 2 + [list(range(1, 1100))]}, 400),
    ({"input": TEXT, "dimensions": 8}, 400),  # the tiny model has no matryoshka dimensions
    ({"input": {"text": TEXT}}, 400),
    ({"input": TEXT, "encoding_format": "hex"}, 400),
]


@pytest.fixture(scope="module")
def embed_stack(
    engine_launcher: EngineLauncher, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EngineProcess, VllmServer]]:
    engine = engine_launcher.start(tiny_model_dir, "--task", "embed", name="embed-engine")
    server = start_vllm_server(
        tiny_model_dir, tmp_path_factory.mktemp("vllm-embed"), "--runner", "pooling"
    )
    try:
        engine.wait_serving()
        server.wait_ready()
        yield engine, server
    finally:
        server.stop()
        engine.stop()


@pytest.fixture(scope="module")
def embed_engine(embed_stack: tuple[EngineProcess, VllmServer]) -> EngineProcess:
    return embed_stack[0]


@pytest.fixture(scope="module")
def reference(embed_stack: tuple[EngineProcess, VllmServer]) -> VllmServer:
    return embed_stack[1]


@pytest.fixture(scope="module")
def embed_gateway(gateway_factory: GatewayFactory, embed_engine: EngineProcess) -> GatewayProcess:
    return gateway_factory([embed_engine])


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1/embeddings", json={"model": MODEL, **body}, timeout=120)


def vectors(payload: dict[str, Any]) -> list[list[float]]:
    out = []
    for item in payload["data"]:
        value = item["embedding"]
        if isinstance(value, str):
            value = np.frombuffer(base64.b64decode(value), dtype="<f4").tolist()
        out.append(value)
    return out


def test_embed_call_returns_one_normalized_vector_per_input(embed_engine: EngineProcess) -> None:
    with grpc.insecure_channel(embed_engine.address) as channel:
        stub = engine_pb2_grpc.EngineStub(channel)  # type: ignore[no-untyped-call]
        info = stub.ModelInfo(engine_pb2.ModelInfoRequest(), timeout=30)
        assert info.task == "embed"
        request = engine_pb2.EmbedRequest(
            request_id="e1", inputs=[engine_pb2.TokenIds(ids=IDS), engine_pb2.TokenIds(ids=[7, 8])]
        )
        response = stub.Embed(request, timeout=60)
        assert [e.prompt_tokens for e in response.embeddings] == [len(IDS), 2]
        assert response.prompt_tokens == len(IDS) + 2
        for embedding in response.embeddings:
            vector = np.frombuffer(embedding.vector, dtype="<f4")
            assert vector.shape == (HIDDEN,)
            assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-3)
        with pytest.raises(grpc.RpcError) as generate:
            list(stub.Generate(engine_pb2.GenerateRequest(prompt_text="hi"), timeout=30))
        assert generate.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        too_long = engine_pb2.EmbedRequest(inputs=[engine_pb2.TokenIds(ids=[1] * 1025)])
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(too_long, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inputs[0]" in (refused.value.details() or "")


@pytest.mark.parametrize("body", CASES, ids=lambda b: str(b)[:48])
def test_embeddings_match_vllms_server(
    body: dict[str, Any], embed_gateway: GatewayProcess, reference: VllmServer
) -> None:
    ours, theirs = post(embed_gateway.url, body), post(reference.url, body)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    a, b = ours.json(), theirs.json()
    assert a["object"] == b["object"] == "list"
    assert a["model"] == b["model"] == MODEL
    assert a["usage"] == {k: b["usage"][k] for k in ("prompt_tokens", "total_tokens")}
    assert [(d["object"], d["index"]) for d in a["data"]] == [
        (d["object"], d["index"]) for d in b["data"]
    ]
    encoded = body.get("encoding_format") == "base64"
    assert all(isinstance(d["embedding"], str) == encoded for d in a["data"])
    for mine, ref in zip(vectors(a), vectors(b), strict=True):
        assert len(mine) == len(ref) == HIDDEN
        assert np.allclose(mine, ref, atol=TOLERANCE), np.abs(np.subtract(mine, ref)).max()


@pytest.mark.parametrize(("body", "status"), REFUSED, ids=lambda v: str(v)[:40])
def test_bad_requests_are_refused_like_vllms_server(
    body: dict[str, Any], status: int, embed_gateway: GatewayProcess, reference: VllmServer
) -> None:
    ours, theirs = post(embed_gateway.url, body), post(reference.url, body)
    assert (ours.status_code, theirs.status_code) == (status, status), (ours.text, theirs.text)
    error = ours.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert isinstance(theirs.json()["error"]["message"], str)


def test_empty_input_is_refused(embed_gateway: GatewayProcess) -> None:
    for value in ([], [""], "", [[]]):
        response = post(embed_gateway.url, {"input": value})
        assert response.status_code == 400, (value, response.text)
        assert response.json()["error"]["param"] == "input"


def test_generation_routes_are_refused_on_an_embedding_model(
    embed_gateway: GatewayProcess,
) -> None:
    for route, body in (
        ("/v1/completions", {"prompt": TEXT}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": TEXT}]}),
    ):
        response = httpx.post(embed_gateway.url + route, json={"model": MODEL, **body}, timeout=30)
        assert response.status_code == 501, response.text
        assert "does not support" in response.json()["error"]["message"]


def test_openai_client_reads_both_encodings(embed_gateway: GatewayProcess) -> None:
    with openai.OpenAI(
        base_url=embed_gateway.base_url, api_key="unused", max_retries=0, timeout=60
    ) as client:
        floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
        packed = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > len(TEXTS)
    for a, b in zip(floats.data, packed.data, strict=True):
        assert len(a.embedding) == HIDDEN
        decoded = b.embedding
        if isinstance(decoded, str):  # older clients leave base64 undecoded
            decoded = np.frombuffer(base64.b64decode(decoded), dtype="<f4").tolist()
        assert np.allclose(a.embedding, decoded, atol=1e-6)
    assert not np.allclose(floats.data[0].embedding, floats.data[1].embedding, atol=1e-3)


def test_metrics_count_embeddings_by_route(embed_gateway: GatewayProcess) -> None:
    assert post(embed_gateway.url, {"input": TEXT}).status_code == 200
    text = httpx.get(embed_gateway.internal_url + "/metrics", timeout=15).text
    assert 'scaleserve_gateway_requests_total{route="embeddings",status="200"}' in text
