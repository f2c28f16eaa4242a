"""Models per replica: which model a request is prepared with and which replicas may take it."""

from __future__ import annotations

from typing import Any

import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.errors import ModelNotFoundError, NoReplicaAvailableError
from scaleserve.gateway.models import Model, model_key
from scaleserve.gateway.pool import SERVING, Endpoint
from scaleserve.gateway.service import Gateway
from scaleserve.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


def serve(gw: Gateway, address: str, key: Any, weight: int, created: int = 0) -> None:
    gw.models.setdefault(key, Model(key, key[0], 1024, 512, None, created))  # type: ignore[arg-type]
    replica = gw.pool.get(address)
    assert replica is not None
    replica.healthy, replica.engine_status = True, SERVING
    replica.weight, replica.model = weight, key


@pytest.mark.asyncio
async def test_requests_go_to_the_variant_with_most_capacity_and_only_its_replicas() -> None:
    gw = Gateway(GatewaySettings())
    gw.pool.set_endpoints([Endpoint("a:1"), Endpoint("b:1"), Endpoint("c:1")])
    chat, old, new = ("chat", "t1"), ("code", "t1"), ("code", "t2")
    serve(gw, "a:1", chat, 1)
    serve(gw, "b:1", old, 1, created=1)
    serve(gw, "c:1", new, 2, created=2)  # a rollout of `code`: new tokenizer, more capacity
    gw.pool.set_endpoints([Endpoint("a:1"), Endpoint("b:1"), Endpoint("c:1")])  # refresh
    try:
        assert gw.resolve("chat").key == chat
        assert gw.resolve("code").key == new
        assert sorted(m.name for m in gw.served_models()) == ["chat", "code"]
        assert [r.key for r in gw.pool.snapshot(model=new).replicas] == ["c:1"]
        with pytest.raises(ModelNotFoundError):
            gw.resolve("other")
        stalled = gw.pool.get("c:1")
        assert stalled is not None
        gw.pool.report_stall(stalled, "test")
        assert gw.resolve("code").key == old  # the old variant still serves
        gw.pool.report_stall(gw.pool.get("b:1"), "test")  # type: ignore[arg-type]
        with pytest.raises(NoReplicaAvailableError):
            gw.resolve("code")  # known, but nothing takes it now: 503, not 404
        assert [m.name for m in gw.served_models()] == ["chat"]
    finally:
        await gw.pool.close()


def test_model_key_changes_with_the_tokenizer_and_not_with_parallelism() -> None:
    base = engine_pb2.ModelInfoResponse(
        served_model_name="m", tokenizer_files={"tokenizer.json": b"{}"}, max_model_len=1024
    )
    wide = engine_pb2.ModelInfoResponse()
    wide.CopyFrom(base)
    wide.tensor_parallel_size = 8
    other = engine_pb2.ModelInfoResponse()
    other.CopyFrom(base)
    other.tokenizer_files["tokenizer.json"] = b'{"v": 2}'
    assert model_key(base) == model_key(wide)
    assert model_key(base) != model_key(other)
    assert model_key(other)[0] == "m"
