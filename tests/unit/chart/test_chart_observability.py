"""The chart's observability pieces: dashboards, ServiceMonitor, PodMonitor, PrometheusRule.

Off by default; each on with one value, rendering the files under charts/scaleserve/dashboards/
and monitoring/ unchanged (one copy for the chart, the docs and the local stack's Prometheus).
The PromQL itself is evaluated by a real Prometheus in e2e/test_local_observability.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from e2e.local.promql import alert_queries, alert_rules, all_dashboard_queries
from scaleserve.engine.metrics import EngineMetrics
from scaleserve.gateway.metrics import GatewayMetrics
from scaleserve.operator.metrics import OperatorMetrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[3]
CHART = ROOT / "charts" / "scaleserve"
DOCS = ROOT / "docs" / "observability.md"
SCHEMA_VERSION = 39
KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
ALL_ON = [
    "--set", "monitoring.dashboards.enabled=true",
    "--set", "monitoring.serviceMonitor.enabled=true",
    "--set", "monitoring.podMonitor.enabled=true",
    "--set", "monitoring.prometheusRule.enabled=true",
]  # fmt: skip

Render = Callable[..., list[dict[str, Any]]]
RunHelm = Callable[..., subprocess.CompletedProcess[str]]


def _monitoring(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        m
        for m in manifests
        if m["kind"] in KINDS or (m["kind"] == "ConfigMap" and "dashboard" in m["metadata"]["name"])
    ]


def _one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, [m["kind"] for m in manifests]
    return found[0]


def test_nothing_is_rendered_by_default(render: Render) -> None:
    assert _monitoring(render()) == []


def test_dashboards_are_configmaps_for_the_grafana_sidecar_holding_the_files(
    render: Render,
) -> None:
    maps = _monitoring(render("--set", "monitoring.dashboards.enabled=true"))
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(maps) == len(files) == 2
    for cm, path in zip(sorted(maps, key=lambda m: m["metadata"]["name"]), files, strict=True):
        assert cm["kind"] == "ConfigMap"
        assert cm["metadata"]["namespace"] == "scaleserve-system"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["data"] == {f"scaleserve-{path.name}": path.read_text().rstrip("\n")}


def test_dashboards_go_to_the_sidecar_namespace_with_its_folder_annotation(render: Render) -> None:
    args = [
        "--set", "monitoring.dashboards.enabled=true",
        "--set", "monitoring.dashboards.namespace=monitoring",
        "--set", "monitoring.dashboards.annotations.grafana_folder=scaleserve",
    ]  # fmt: skip
    maps = _monitoring(render(*args))
    assert {m["metadata"]["namespace"] for m in maps} == {"monitoring"}
    assert all(m["metadata"]["annotations"] == {"grafana_folder": "scaleserve"} for m in maps)


def test_prometheus_operator_objects_carry_the_rule_file_and_relabelings(render: Render) -> None:
    manifests = render(*ALL_ON, "--set", "monitoring.podMonitor.labels.release=kps")
    rule = _one(manifests, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "monitoring" / "alerts.yaml").read_text())
    pods = _one(manifests, "PodMonitor")
    assert pods["metadata"]["labels"]["release"] == "kps"
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    assert pods["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "scaleserve-operator"}
    }
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    relabelings = yaml.safe_load((CHART / "monitoring" / "pod-relabelings.yaml").read_text())
    assert endpoint["relabelings"] == relabelings
    assert "port" not in endpoint  # the annotations say which port


def test_the_service_monitor_scrapes_the_operator_service_with_its_own_labels(
    render: Render,
) -> None:
    manifests = render(*ALL_ON)
    monitor = _one(manifests, "ServiceMonitor")
    service = _one(manifests, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["scaleserve-system"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # the operator's namespace/endpoint labels name LLMEndpoints, not the scrape target
    assert endpoint["honorLabels"] is True
    assert {"targetLabel": "component", "replacement": "operator"}.items() <= endpoint[
        "relabelings"
    ][0].items()


def test_the_pod_monitor_follows_a_namespaced_operator(render: Render) -> None:
    manifests = render(
        "--set", "monitoring.podMonitor.enabled=true",
        "-f", str(Path(__file__).parent / "values" / "namespaced.yaml"),
    )  # fmt: skip
    pods = _one(manifests, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_the_service_monitor_needs_the_metrics_port(run_helm: RunHelm, kube_version: str) -> None:
    result = run_helm(
        "template", "x", str(CHART), "--kube-version", kube_version,
        "--set", "monitoring.serviceMonitor.enabled=true", "--set", "operator.metricsPort=0",
    )  # fmt: skip
    assert result.returncode != 0
    assert "monitoring.serviceMonitor needs operator.metricsPort" in result.stderr


def test_helm_lint_is_clean_with_everything_on(run_helm: RunHelm, kube_version: str) -> None:
    result = run_helm("lint", "--strict", "--kube-version", kube_version, str(CHART), *ALL_ON)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


# --- the files themselves, without helm -------------------------------------------------------


@pytest.mark.parametrize("name", ["endpoint.json", "operator.json"])
def test_dashboards_are_grafana_json_of_the_schema_version(name: str) -> None:
    board = json.loads((CHART / "dashboards" / name).read_text())
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert board["uid"] == f"scaleserve-{name.removesuffix('.json')}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert "datasource" in variables
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)


def _defined_series() -> set[str]:
    """Every series name the operator, gateway and engine metrics modules define."""
    live = {"in_flight": 0, "in_flight_avg": 0.0, "queued": 0, "held": 0, "replicas": []}
    engine = CollectorRegistry()
    EngineMetrics(engine)
    registries = [OperatorMetrics().registry, GatewayMetrics(lambda: live).registry, engine]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in suffixes[family.type]
    }


def test_every_scaleserve_metric_the_dashboards_and_alerts_use_exists() -> None:
    defined = _defined_series()
    for query in [*all_dashboard_queries(), *alert_queries()]:
        for name in re.findall(r"\bscaleserve_[a-z_]+", query.expr):
            assert name in defined, f"{query.where}: {name} is not a metric of any component"


def test_every_alert_has_a_severity_a_duration_and_a_runbook_entry() -> None:
    headings = {
        line.removeprefix("### ").lower()
        for line in DOCS.read_text().splitlines()
        if line.startswith("### ")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert re.fullmatch(r"\d+m", rule["for"]), name
        assert rule["annotations"]["runbook"] == f"docs/observability.md#{name.lower()}"
        assert name.lower() in headings, f"no runbook entry for {name} in {DOCS.name}"
