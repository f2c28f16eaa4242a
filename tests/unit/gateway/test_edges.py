"""Pure pieces at the gateway's edges: request parsing, settings, discovery, stats, admission."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client import (
    DiscoveryV1EndpointPort,
    V1Endpoint,
    V1EndpointConditions,
    V1EndpointSlice,
    V1ObjectMeta,
)

from scaleserve.gateway.discovery.kubernetes import endpoints_from_slices, label_selector
from scaleserve.gateway.errors import InvalidRequestError, OverloadedError
from scaleserve.gateway.limits import Admission
from scaleserve.gateway.protocol import parse_chat, parse_completion, parse_json
from scaleserve.gateway.settings import GatewaySettings, SettingsError
from scaleserve.gateway.stats import TimeWeightedGauge

pytestmark = pytest.mark.unit


def completion(**kw: object) -> dict:
    return {"model": "m", "prompt": "hi", **kw}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (completion(temperature=2.5), "temperature"),
        (completion(temperature="hot"), "temperature"),
        (completion(top_p=0), "top_p"),
        (completion(max_tokens=0), "max_tokens"),
        (completion(max_tokens=-5), "max_tokens"),
        (completion(max_tokens=1.5), "max_tokens"),
        (completion(max_completion_tokens=True), "max_completion_tokens"),
        (completion(n=0), "n"),
        (completion(n=2, best_of=3), "best_of"),
        (completion(stop=["a", "b", "c", "d", "e"]), "stop"),
        (completion(stop=5), "stop"),
        (completion(presence_penalty=3), "presence_penalty"),
        (completion(seed="x"), "seed"),
        (completion(stream="yes"), "stream"),
        (completion(stream_options={"include_usage": True}), "stream_options"),
        (completion(logprobs=21), "logprobs"),
        (completion(logprobs=True), "logprobs"),
        (completion(logit_bias={"x": 1}), "logit_bias"),
        (completion(response_format={"type": "json_schema"}), "response_format"),
        (completion(suffix="x"), "suffix"),
        (completion(prompt=None), "prompt"),
        (completion(prompt=""), "prompt"),
        (completion(prompt=["a", "b"]), "prompt"),
        (completion(prompt=[1, -2]), "prompt"),
        (completion(prompt={"x": 1}), "prompt"),
        ({"prompt": "hi"}, "model"),
    ],
)
def test_bad_completion_fields_name_their_param(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_completion(body)
    assert info.value.param == param
    assert info.value.status == 400


def test_completion_parse_keeps_sampling() -> None:
    req = parse_completion(
        completion(
            max_completion_tokens=7,
            temperature=0,
            top_p=0.5,
            seed=3,
            stop="x",
            stream=True,
            stream_options={"include_usage": True},
            n=1,
        )
    )
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.seed, s.stop) == (7, 0.0, 0.5, 3, ("x",))
    assert req.stream
    assert req.include_usage
    assert parse_completion(completion(prompt=[[1, 2, 3]])).prompt == (1, 2, 3)
    assert parse_completion(completion(prompt=["only"])).prompt == "only"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "tools",
        ),
    ],
)
def test_bad_chat_bodies_name_their_param(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(body)
    assert info.value.param == param


def test_chat_text_parts_are_joined() -> None:
    req = parse_chat(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
        }
    )
    assert req.messages == ({"role": "user", "content": "a\nb"},)  # joined as vLLM joins them


@pytest.mark.parametrize("body", [b"", b"{", b"[1]", b"null", b'"x"'])
def test_bodies_that_are_not_objects_are_400(body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        parse_json(body)


def test_settings_from_env_and_flags() -> None:
    env = {
        "SCALESERVE_GATEWAY_REPLICAS": "a:1, b:2",
        "SCALESERVE_GATEWAY_ROUTING": "prefix-affinity",
        "SCALESERVE_GATEWAY_MAX_QUEUE": "7",
    }
    s = GatewaySettings.load({"max_queue": 9}, env)
    assert s.replicas == ("a:1", "b:2")
    assert s.routing == "prefix-affinity"
    assert s.max_queue == 9
    with pytest.raises(SettingsError):
        GatewaySettings.load({}, {"SCALESERVE_GATEWAY_ROUTING": "random"})
    with pytest.raises(SettingsError):
        GatewaySettings(replicas=("nohost",))
    with pytest.raises(SettingsError):
        GatewaySettings(discovery="kubernetes")


def slice_(
    name: str, port_name: str, endpoints: list[tuple[str, bool | None, bool | None, bool | None]]
) -> V1EndpointSlice:
    return V1EndpointSlice(
        address_type="IPv4",
        metadata=V1ObjectMeta(name=name),
        ports=[
            DiscoveryV1EndpointPort(name="metrics", port=9090),
            DiscoveryV1EndpointPort(name=port_name, port=50051),
        ],
        endpoints=[
            V1Endpoint(
                addresses=[ip],
                conditions=V1EndpointConditions(ready=ready, serving=serving, terminating=term),
            )
            for ip, ready, serving, term in endpoints
        ],
    )


def test_endpoint_slices_map_conditions() -> None:
    slices = [
        slice_("s1", "grpc", [("10.0.0.1", True, True, False), ("10.0.0.2", False, True, True)]),
        slice_("s2", "grpc", [("10.0.0.3", False, False, False), ("10.0.0.4", None, None, None)]),
    ]
    eps = {e.address: e for e in endpoints_from_slices(slices)}
    assert set(eps) == {"10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051", "10.0.0.4:50051"}
    assert eps["10.0.0.1:50051"].serving
    assert not eps["10.0.0.1:50051"].terminating
    assert eps["10.0.0.2:50051"].terminating  # finishes its work, gets no new requests
    assert not eps["10.0.0.3:50051"].serving
    assert eps["10.0.0.4:50051"].serving  # absent conditions mean ready
    assert label_selector("e-engine", "a=b") == "kubernetes.io/service-name=e-engine,a=b"


def test_endpoint_slices_as_dicts_and_ipv6() -> None:
    raw = {
        "metadata": {"name": "s"},
        "ports": [{"name": "grpc", "port": 7}],
        "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": True}}],
    }
    assert [e.address for e in endpoints_from_slices([raw])] == ["[fd00::1]:7"]


def test_time_weighted_gauge() -> None:
    now = [0.0]
    g = TimeWeightedGauge(window=10.0, clock=lambda: now[0])
    g.add(4)
    now[0] = 5.0
    g.add(-4)  # 4 for 5 s
    now[0] = 10.0  # 0 for 5 s
    assert g.mean() == pytest.approx(2.0)
    for t in range(11, 40):
        now[0] = float(t)
        g.add(0)
    assert g.mean() == pytest.approx(0.0, abs=0.5)
    g.add(2)
    now[0] = 60.0
    assert g.mean() == pytest.approx(2.0, abs=0.25)


@pytest.mark.asyncio
async def test_admission_queues_then_rejects_with_retry_after() -> None:
    adm = Admission(limit=1, queue_limit=1, retry_after=3)
    await adm.acquire()
    waiter = asyncio.ensure_future(adm.acquire())
    await asyncio.sleep(0)
    assert adm.queued == 1
    with pytest.raises(OverloadedError) as info:
        await adm.acquire()
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "3"
    adm.release()
    await waiter
    assert (adm.running, adm.queued) == (1, 0)
    adm.release()
    assert adm.running == 0


@pytest.mark.asyncio
async def test_admission_cancelled_waiter_leaves_queue() -> None:
    adm = Admission(limit=1, queue_limit=4)
    await adm.acquire()
    waiter = asyncio.ensure_future(adm.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert adm.queued == 0
    adm.release()
    assert adm.running == 0


@pytest.mark.asyncio
async def test_admission_queue_wait_is_bounded() -> None:
    adm = Admission(limit=1, queue_limit=4, retry_after=2, queue_timeout=0.05)
    assert adm.try_acquire()
    assert not adm.try_acquire()
    with pytest.raises(OverloadedError) as info:
        await adm.acquire()
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "2"
    assert "queue" in info.value.message
    assert (adm.running, adm.queued) == (1, 0)
    adm.release()
    assert adm.running == 0
