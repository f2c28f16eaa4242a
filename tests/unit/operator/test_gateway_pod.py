"""The gateway pod survives load and shuts down without cutting streams (pure builders)."""

from __future__ import annotations

import argparse

import pytest

from scaleserve.gateway.settings import GatewaySettings, add_arguments
from scaleserve.operator.builders import Observed, Owner, desired
from scaleserve.operator.builders.gateway import DRAIN_S, PRE_STOP_S
from scaleserve.operator.builders.naming import GATEWAY_INTERNAL_PORT
from scaleserve.operator.settings import OperatorSettings
from scaleserve.operator.spec import parse_spec

pytestmark = pytest.mark.unit

OWNER = Owner("chat", "serving", "0b7c2a51-0000-4000-8000-000000000001")
SPEC = {"model": {"uri": "hf://org/model"}, "layout": {"replicas": 1, "tensorParallel": 1}}


def manifests(gateway: dict | None = None) -> list[dict]:
    raw = {**SPEC, "gateway": gateway} if gateway else SPEC
    return desired(parse_spec(raw), Observed(OWNER))


def gateway_pod(gateway: dict | None = None) -> dict:
    (deployment,) = [m for m in manifests(gateway) if m["kind"] == "Deployment"]
    return deployment["spec"]["template"]


def test_shutdown_outlasts_the_drain() -> None:
    pod = gateway_pod()
    container = pod["spec"]["containers"][0]
    args = container["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    assert drain == DRAIN_S
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": PRE_STOP_S}}
    # preStop, then the drain, then uvicorn's 5 s margin, all inside the grace period
    assert pod["spec"]["terminationGracePeriodSeconds"] > PRE_STOP_S + drain + 5


def test_liveness_does_not_queue_behind_streams_and_stats_are_internal() -> None:
    pod = gateway_pod()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["internal"] == GATEWAY_INTERNAL_PORT
    live = container["livenessProbe"]
    assert live["httpGet"] == {"path": "/livez", "port": "internal"}
    assert live["timeoutSeconds"] >= 5
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(GATEWAY_INTERNAL_PORT)
    # the operator reads /stats where the gateway serves it
    assert f":{GATEWAY_INTERNAL_PORT}/stats" in OperatorSettings().stats_url
    args = container["args"]
    assert args[args.index("--internal-port") + 1] == str(GATEWAY_INTERNAL_PORT)
    (service,) = [
        m for m in manifests() if m["kind"] == "Service" and "gateway" in m["metadata"]["name"]
    ]
    assert [p["port"] for p in service["spec"]["ports"]] == [8000]  # the API port only


def test_gateways_have_default_requests_the_user_can_override() -> None:
    requests = gateway_pod()["spec"]["containers"][0]["resources"]["requests"]
    assert set(requests) == {"cpu", "memory"}
    mine = gateway_pod({"resources": {"requests": {"cpu": "4"}}})
    assert mine["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "4"


def test_gateways_have_a_disruption_budget() -> None:
    budgets = [m for m in manifests() if m["kind"] == "PodDisruptionBudget"]
    (gateway,) = [b for b in budgets if b["metadata"]["name"] == "chat-gateway"]
    assert gateway["spec"]["maxUnavailable"] == 1
    selector = gateway["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "gateway"


def gateway_args(gateway: dict | None = None) -> list[str]:
    args: list[str] = gateway_pod(gateway)["spec"]["containers"][0]["args"]
    return args


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize(
    ("gateway", "workers"),
    [
        (None, "1"),  # no CPU limit
        ({"resources": {"limits": {"cpu": "2"}}}, "2"),
        ({"resources": {"limits": {"cpu": "3500m"}}}, "3"),
        ({"resources": {"limits": {"cpu": "500m"}}}, "1"),
        ({"resources": {"limits": {"cpu": 4}}}, "4"),
        ({"workers": 3, "resources": {"limits": {"cpu": "8"}}}, "3"),  # the spec wins
    ],
)
def test_gateway_workers_follow_the_spec_or_the_cpu_limit(
    gateway: dict | None, workers: str
) -> None:
    assert flag(gateway_args(gateway), "--workers") == workers


def test_gateway_deadlines_reach_the_gateway_flags_and_unset_ones_keep_its_defaults() -> None:
    args = gateway_args(
        {"deadlines": {"firstTokenSeconds": 90, "idleSeconds": 15.5, "writeStallSeconds": 20}}
    )
    assert flag(args, "--first-token-timeout") == "90"
    assert flag(args, "--token-idle-timeout") == "15.5"
    assert flag(args, "--write-timeout") == "20"
    assert flag(args, "--queue-timeout") is None
    assert flag(args, "--receive-timeout") is None
    # the gateway itself accepts them
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = GatewaySettings.load(parser.parse_args(args), {})
    assert (settings.first_token_timeout, settings.token_idle_timeout) == (90.0, 15.5)
    assert (settings.write_timeout, settings.queue_timeout) == (20.0, 30.0)


@pytest.mark.parametrize(
    ("gateway", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 65}, "workers"),
        ({"deadlines": {"idleSeconds": 0}}, "idleSeconds"),
        ({"deadlines": {"firstTokenSeconds": 4000}}, "firstTokenSeconds"),
        ({"deadlines": {"queueSeconds": 0.01}}, "queueSeconds"),
    ],
)
def test_out_of_range_gateway_settings_are_refused_naming_the_field(
    gateway: dict, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        parse_spec({**SPEC, "gateway": gateway})
