"""The operator's metrics: endpoint gauges follow the status a pass computed and go with it."""

from __future__ import annotations

import pytest

from scaleserve.operator.metrics import PHASES, OperatorMetrics

pytestmark = pytest.mark.unit


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def status(phase: str, replicas: int, ready: int, reshaping: bool, **extra: object) -> dict:
    return {
        "phase": phase,
        "replicas": replicas,
        "readyReplicas": ready,
        "gpus": replicas * 2,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "Reshaping", "status": "True" if reshaping else "False"},
        ],
        **extra,
    }


def test_endpoint_gauges_follow_the_latest_status() -> None:
    metrics = OperatorMetrics()
    ep = {"namespace": "ns", "endpoint": "chat"}
    metrics.endpoint("ns", "chat", status("Deploying", 2, 0, False))
    assert value(metrics, "scaleserve_operator_endpoint_replicas", **ep) == 2
    assert value(metrics, "scaleserve_operator_endpoint_ready_replicas", **ep) == 0
    assert value(metrics, "scaleserve_operator_endpoint_gpus", **ep) == 4
    # no concurrency observed yet (a fixed layout, or no gateway answered): no series
    assert value(metrics, "scaleserve_operator_endpoint_observed_concurrency", **ep) is None

    metrics.endpoint("ns", "chat", status("Reshaping", 4, 2, True, observedConcurrency=37.5))
    assert value(metrics, "scaleserve_operator_endpoint_ready_replicas", **ep) == 2
    assert value(metrics, "scaleserve_operator_endpoint_observed_concurrency", **ep) == 37.5
    assert value(metrics, "scaleserve_operator_endpoint_reshaping", **ep) == 1
    phases = {
        p: value(metrics, "scaleserve_operator_endpoint_phase", **ep, phase=p) for p in PHASES
    }
    assert phases == {p: (1.0 if p == "Reshaping" else 0.0) for p in PHASES}

    metrics.endpoint("ns", "chat", status("Ready", 4, 4, False, observedConcurrency=40))
    assert value(metrics, "scaleserve_operator_endpoint_reshaping", **ep) == 0
    assert value(metrics, "scaleserve_operator_endpoint_phase", **ep, phase="Ready") == 1
    assert value(metrics, "scaleserve_operator_endpoint_phase", **ep, phase="Reshaping") == 0


def test_a_forgotten_endpoint_leaves_no_series_and_others_stay() -> None:
    metrics = OperatorMetrics()
    metrics.endpoint("ns", "gone", status("Ready", 1, 1, False, observedConcurrency=3))
    metrics.endpoint("ns", "kept", status("Ready", 8, 8, False))
    metrics.forget("ns", "gone")
    metrics.forget("ns", "never-seen")
    text = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in metrics.registry.collect()
        for sample in family.samples
        if family.name.startswith("scaleserve_operator_endpoint")
    }
    assert not [t for t in text if ("endpoint", "gone") in t[1]]
    assert (
        "scaleserve_operator_endpoint_replicas",
        (("endpoint", "kept"), ("namespace", "ns")),
    ) in text
