"""The typed spec: defaults match the CRD, cross-field rules name the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleserve.operator.spec import MANAGED_ENGINE_ARGS, SpecError, parse_spec

pytestmark = pytest.mark.unit

CRD = Path(__file__).parents[3] / "crds" / "llmendpoints.yaml"


def _spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def test_a_minimal_static_spec_gets_the_crd_defaults() -> None:
    spec = parse_spec(
        {"model": {"uri": "hf://org/llama"}, "layout": {"replicas": 1, "tensorParallel": 8}}
    )
    schema = _spec_schema()["properties"]
    eng = schema["engine"]["properties"]
    assert spec.engine.image == eng["image"]["default"]
    assert spec.engine.dtype == eng["dtype"]["default"]
    assert spec.engine.gpu_memory_utilization == eng["gpuMemoryUtilization"]["default"]
    assert spec.engine.prefix_caching is eng["prefixCaching"]["default"]
    assert spec.engine.drain_timeout_seconds == eng["drainTimeoutSeconds"]["default"]
    assert spec.gpu.resource_name == schema["gpu"]["properties"]["resourceName"]["default"]
    assert spec.gpu.per_node == schema["gpu"]["properties"]["perNode"]["default"]
    assert spec.gateway.routing == schema["gateway"]["properties"]["routing"]["default"]
    assert spec.model.name == "llama"
    assert spec.model.engine_model == "org/llama"


def test_autoscaling_defaults_match_the_crd() -> None:
    spec = parse_spec({"model": {"uri": "/models/x"}, "autoscaling": {"gpuBudget": 8}})
    props = _spec_schema()["properties"]["autoscaling"]["properties"]
    auto = spec.autoscaling
    assert auto is not None
    assert list(auto.tensor_parallel_candidates) == props["tensorParallelCandidates"]["default"]
    assert list(auto.concurrency_thresholds) == props["concurrencyThresholds"]["default"]
    assert auto.window_seconds == props["windowSeconds"]["default"]
    assert auto.cooldown_seconds == props["cooldownSeconds"]["default"]
    assert auto.hysteresis == props["hysteresis"]["default"]
    assert auto.surge_gpus == props["surgeGPUs"]["default"]


def test_every_crd_field_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: dict[str, Any], where: str) -> None:
        if "description" not in node and not node.get("x-kubernetes-int-or-string"):
            missing.append(where)
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{where}.{name}")

    walk(_spec_schema(), "spec")
    assert missing == []


def test_pvc_uri_mounts_under_models() -> None:
    spec = parse_spec({"model": {"uri": "pvc://weights/llama-8b"}, "autoscaling": {"gpuBudget": 8}})
    assert spec.model.pvc_claim == "weights"
    assert spec.model.engine_model == "/models/llama-8b"


INVALID = [
    (
        {"model": {"uri": "s3://x"}, "layout": {"replicas": 1, "tensorParallel": 1}},
        "spec.model.uri",
    ),
    ({"model": {"uri": "/m"}}, "exactly one of spec.layout and spec.autoscaling"),
    (
        {
            "model": {"uri": "/m"},
            "layout": {"replicas": 1, "tensorParallel": 1},
            "autoscaling": {"gpuBudget": 8},
        },
        "exactly one of spec.layout and spec.autoscaling",
    ),
    (
        {"model": {"uri": "/m"}, "layout": {"replicas": 1, "tensorParallel": 3}},
        "spec.layout.tensorParallel",
    ),
    (
        {
            "model": {"uri": "/m"},
            "gpu": {"perNode": 4},
            "layout": {"replicas": 1, "tensorParallel": 8},
        },
        "spec.layout.tensorParallel must divide spec.gpu.perNode",
    ),
    ({"model": {"uri": "/m"}, "autoscaling": {"gpuBudget": 12}}, "spec.autoscaling.gpuBudget"),
    (
        {
            "model": {"uri": "/m"},
            "autoscaling": {"gpuBudget": 8, "tensorParallelCandidates": [1, 8]},
        },
        "strictly descending",
    ),
    (
        {
            "model": {"uri": "/m"},
            "autoscaling": {
                "gpuBudget": 8,
                "tensorParallelCandidates": [8, 4, 1],
                "concurrencyThresholds": [64, 32],
            },
        },
        "spec.autoscaling.concurrencyThresholds must be strictly ascending",
    ),
    (
        {"model": {"uri": "/m"}, "autoscaling": {"gpuBudget": 8, "concurrencyThresholds": [8, 16]}},
        "one entry fewer",
    ),
    (
        {
            "model": {"uri": "/m"},
            "engine": {"gpuMemoryUtilization": 1.5},
            "autoscaling": {"gpuBudget": 8},
        },
        "spec.engine.gpuMemoryUtilization",
    ),
    (
        {
            "model": {"uri": "/m"},
            "engine": {"extraArgs": {"swap_space": 4, "--tensor-parallel-size": 2, "port": 1}},
            "autoscaling": {"gpuBudget": 8},
        },
        "spec.engine.extraArgs must not set --tensor-parallel-size, port",
    ),
    (
        {
            "model": {"uri": "/m"},
            "layout": {"replicas": 1, "tensorParallel": 8},
            "tracing": {"endpoint": "http://collector:4318", "samplingRatio": 1.5},
        },
        "spec.tracing.samplingRatio",
    ),
    (
        {
            "model": {"uri": "/m"},
            "task": "embed",
            "engine": {"toolCallParser": "hermes"},
            "layout": {"replicas": 1, "tensorParallel": 8},
        },
        "spec.engine.toolCallParser has no use with spec.task embed",
    ),
]


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_specs_are_rejected_naming_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_spec(raw)


def test_the_crd_refuses_the_same_managed_engine_args_as_the_operator() -> None:
    extra = _spec_schema()["properties"]["engine"]["properties"]["extraArgs"]
    assert sorted(extra["properties"]) == sorted(MANAGED_ENGINE_ARGS)
    refused = [
        re.findall(r"^!has\(self\.(\w+)\)$", r["rule"]) for r in extra["x-kubernetes-validations"]
    ]
    assert sorted(name for names in refused for name in names) == sorted(MANAGED_ENGINE_ARGS)
    # every engine argument the engine derives from its flags is among them (request logging,
    # a pure diagnostic, stays the user's choice)
    from scaleserve.engine.engine_args import engine_args_kwargs
    from scaleserve.engine.settings import EngineSettings

    derived = engine_args_kwargs(
        EngineSettings(model="/m", served_name="m", quantization="fp8", max_model_len=8,
                       enable_prefix_caching=True, max_num_seqs=8)
    )  # fmt: skip
    assert set(derived) - {"enable_log_requests"} <= set(MANAGED_ENGINE_ARGS)


def test_the_gateway_bounds_match_the_crd() -> None:
    from scaleserve.operator.spec import GatewayDeadlines, GatewaySettings

    gateway = _spec_schema()["properties"]["gateway"]["properties"]
    crd = {"workers": gateway["workers"], **gateway["deadlines"]["properties"]}
    fields = {
        "workers": GatewaySettings.model_fields["workers"],
        **{f.alias: f for f in GatewayDeadlines.model_fields.values()},
    }
    assert set(crd) == set(fields)
    for name, field in fields.items():
        bounds = {type(m).__name__: m for m in field.metadata}
        assert bounds["Ge"].ge == crd[name]["minimum"], name
        assert bounds["Le"].le == crd[name]["maximum"], name


OBJECTIVES = {
    "mode": "objectives",
    "objectives": {"ttftP99Ms": 500, "tbtP50Ms": 25},
    "minGPUs": 0,
    "maxGPUs": 16,
    "profile": {"configMapKeyRef": {"name": "llama-h100"}},
}


def _objectives(**changes: Any) -> dict[str, Any]:
    return {"model": {"uri": "/m"}, "autoscaling": {**OBJECTIVES, **changes}}


def test_objectives_mode_parses_with_its_defaults() -> None:
    auto = parse_spec(_objectives()).autoscaling
    assert auto is not None
    assert auto.mode == "objectives"
    assert (auto.least, auto.budget, auto.idle_seconds) == (0, 16, 600)
    assert auto.scale_up_lookahead_seconds is None  # two of the profile's start-ups
    assert auto.profile is not None
    assert auto.profile.config_map is not None
    assert auto.profile.config_map.key == "profile.yaml"
    props = _spec_schema()["properties"]["autoscaling"]["properties"]
    assert props["mode"]["default"] == "thresholds"
    assert props["profile"]["properties"]["configMapKeyRef"]["properties"]["key"]["default"] == (
        "profile.yaml"
    )
    assert parse_spec({"model": {"uri": "/m"}, "autoscaling": {"gpuBudget": 8}}).autoscaling


OBJECTIVES_INVALID = [
    (_objectives(gpuBudget=8), "spec.autoscaling.gpuBudget applies to mode thresholds only"),
    (_objectives(maxGPUs=None), "spec.autoscaling.maxGPUs is required in mode objectives"),
    (_objectives(objectives=None), "spec.autoscaling.objectives is required in mode objectives"),
    (_objectives(objectives={}), "spec.autoscaling.objectives must set at least one"),
    (_objectives(profile=None), "spec.autoscaling.profile is required in mode objectives"),
    (_objectives(minGPUs=32), "spec.autoscaling.minGPUs must not exceed spec.autoscaling.maxGPUs"),
    (
        _objectives(maxGPUs=4, tensorParallelCandidates=[8]),
        "spec.autoscaling.maxGPUs must be at least the smallest",
    ),
    (
        _objectives(minGPUs=1, scaleToZeroAfterSeconds=60),
        "spec.autoscaling.scaleToZeroAfterSeconds needs minGPUs 0",
    ),
    (
        _objectives(profile={"configMapKeyRef": {"name": "p"}, "inline": {}}),
        "exactly one of spec.autoscaling.profile.configMapKeyRef and",
    ),
    (
        _objectives(profile={"inline": {"kind": "PerformanceProfile"}}),
        "spec.autoscaling.profile.inline.apiVersion",
    ),
    (
        {"model": {"uri": "/m"}, "autoscaling": {"gpuBudget": 8, "maxGPUs": 8}},
        "spec.autoscaling.maxGPUs applies to mode objectives only",
    ),
    ({"model": {"uri": "/m"}, "autoscaling": {}}, "spec.autoscaling.gpuBudget is required"),
    (
        {"model": {"uri": "/m"}, "autoscaling": {"gpuBudget": 8, "scaleUpLookaheadSeconds": 60}},
        "spec.autoscaling.scaleUpLookaheadSeconds applies to mode objectives only",
    ),
    (_objectives(scaleUpLookaheadSeconds=-1), "scaleUpLookaheadSeconds"),
]


@pytest.mark.parametrize(("raw", "message"), OBJECTIVES_INVALID)
def test_invalid_objectives_specs_are_rejected_naming_the_field(
    raw: dict[str, Any], message: str
) -> None:
    auto = raw["autoscaling"]
    raw = {**raw, "autoscaling": {k: v for k, v in auto.items() if v is not None}}
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_spec(raw)


def test_a_malformed_inline_profile_names_the_field_inside_it() -> None:
    from tests.fixtures.profiles import profile_document

    document = profile_document({1: [(1, 10.0, 2.0)]})
    document["tensorParallel"][0]["points"][0]["ttftMs"] = -1
    with pytest.raises(
        SpecError, match=r"spec\.autoscaling\.profile\.inline\.tensorParallel\.0\.points\.0\.ttftMs"
    ):
        parse_spec(_objectives(profile={"inline": document}))
