"""The local stack's Prometheus: its config and the pod targets its discovery file holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaleserve.dev.prometheus import ALERTS, config, relabel_configs
from scaleserve.dev.prometheus_sd import pod_targets, write_if_changed
from scaleserve.operator.builders import Observed, Owner, PlacedGroup, desired
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import parse_spec

pytestmark = pytest.mark.unit


def _pod_of(kind: str) -> dict[str, object]:
    """A pod as the API server would hold it, from the operator's own manifest for `kind`."""
    spec = parse_spec({"model": {"uri": "hf://org/model"}, "layout": {"replicas": 1,
                       "tensorParallel": 2}})  # fmt: skip
    owner = Owner("tiny", "team-a", "uid")
    manifest = next(
        m for m in desired(spec, Observed(owner, [PlacedGroup(Group("g0-tp2", 2, 2))]))
        if m["kind"] == kind
    )  # fmt: skip
    template = manifest["spec"]["template"]
    metadata = {**template["metadata"], "name": f"{kind.lower()}-0", "namespace": "team-a"}
    return {
        "metadata": metadata,
        "spec": {**template["spec"], "nodeName": "local-0"},
        "status": {"phase": "Running", "podIP": "10.251.1.7"},
    }


def test_pods_are_listed_with_the_labels_kubernetes_discovery_gives() -> None:
    groups = pod_targets([_pod_of("StatefulSet"), _pod_of("Deployment")])
    engine = [g for g in groups if g["labels"]["__meta_kubernetes_pod_name"] == "statefulset-0"]
    # one target per declared port (grpc, metrics); the relabelings keep the annotated one
    assert sorted(g["targets"][0] for g in engine) == ["10.251.1.7:50051", "10.251.1.7:9090"]
    labels = engine[0]["labels"]
    assert labels["__meta_kubernetes_namespace"] == "team-a"
    assert labels["__meta_kubernetes_pod_ip"] == "10.251.1.7"
    assert labels["__meta_kubernetes_pod_label_scaleserve_io_endpoint"] == "tiny"
    assert labels["__meta_kubernetes_pod_label_scaleserve_io_tensor_parallel"] == "2"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_port"] == "9090"
    gateway = [g for g in groups if g["labels"]["__meta_kubernetes_pod_name"] == "deployment-0"]
    assert gateway
    assert gateway[0]["labels"]["__meta_kubernetes_pod_label_app_kubernetes_io_component"] == (
        "gateway"
    )


def test_pods_without_an_address_are_left_out() -> None:
    pod = _pod_of("Deployment")
    pod["status"] = {"phase": "Pending"}
    assert pod_targets([pod]) == []


def test_the_targets_file_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "pods.json"
    groups = pod_targets([_pod_of("Deployment")])
    assert write_if_changed(path, groups)
    assert not write_if_changed(path, groups)
    assert json.loads(path.read_text()) == groups
    assert write_if_changed(path, [])


def test_the_config_scrapes_the_operator_with_its_labels_and_the_pods_by_the_relabelings(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path / "pods.json", "127.0.0.1:9999")
    assert cfg["rule_files"] == [str(ALERTS)]
    operator, pods = cfg["scrape_configs"]
    assert operator["honor_labels"] is True
    assert operator["static_configs"] == [
        {"targets": ["127.0.0.1:9999"], "labels": {"component": "operator"}}
    ]
    assert pods["file_sd_configs"][0]["files"] == [str(tmp_path / "pods.json")]
    assert pods["relabel_configs"] == relabel_configs()
    # the PodMonitor's camelCase keys in Prometheus' spelling
    assert pods["relabel_configs"][0] == {
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "regex": "true",
    }
    assert {"action", "source_labels", "target_label"} <= set(pods["relabel_configs"][1])
