"""`helm lint` and `helm template` of charts/scaleserve: golden files and what the RBAC grants.

Regenerate the golden files with SCALESERVE_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleserve.operator.builders import Observed, Owner, PlacedGroup, desired
from scaleserve.operator.kube import KINDS
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import parse_spec

pytestmark = pytest.mark.unit

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
VALUES = HERE / "values"
CHART = Path(__file__).parents[3] / "charts" / "scaleserve"
CASES = {"default": None, **{p.stem: p for p in sorted(VALUES.glob("*.yaml"))}}

Render = Callable[..., list[dict[str, Any]]]
RunHelm = Callable[..., subprocess.CompletedProcess[str]]


def _args(case: str) -> list[str]:
    path = CASES[case]
    return [] if path is None else ["-f", str(path)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_templates_match_the_golden_files(render: Render, case: str) -> None:
    text = yaml.safe_dump_all(render(*_args(case)), sort_keys=True)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("SCALESERVE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing {path}; run with SCALESERVE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} is stale; run with SCALESERVE_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_lint_is_clean(run_helm: RunHelm, kube_version: str, case: str) -> None:
    result = run_helm("lint", "--strict", "--kube-version", kube_version, str(CHART), *_args(case))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


def test_wrong_values_are_refused_by_the_schema(run_helm: RunHelm, kube_version: str) -> None:
    result = run_helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        kube_version,
        "--set",
        "operator.scope=everywhere",
    )
    assert result.returncode != 0
    assert "scope" in result.stderr


# --- what the RBAC grants, checked against what the operator does ---------------------------


LEADER_ELECTION = "-leader-election"


def _rules(manifests: Iterable[dict[str, Any]], kind: str) -> dict[str, list[Any]]:
    """namespace ("" for a ClusterRole) -> rules of every object of `kind` (but the Role of
    leader election, checked on its own)."""
    out: dict[str, list[Any]] = {}
    for m in manifests:
        if m["kind"] == kind and not m["metadata"]["name"].endswith(LEADER_ELECTION):
            out.setdefault(m["metadata"].get("namespace", ""), []).extend(m["rules"])
    return out


def _allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


def _group_and_plural(kind: str) -> tuple[str, str]:
    prefix, plural = KINDS[kind]
    return ("" if prefix == "/api/v1" else prefix.split("/")[2]), plural


def _children() -> list[dict[str, Any]]:
    spec = parse_spec({"model": {"uri": "hf://org/model"}, "layout": {"replicas": 1,
                       "tensorParallel": 8}})  # fmt: skip
    return desired(spec, Observed(Owner("e", "ns", "uid"), [PlacedGroup(Group("g0-tp8", 8, 8))]))


# (group, resource, verb) the operator's own code uses beyond applying children
OPERATOR_CALLS = [
    ("scaleserve.io", "llmendpoints", "get"),
    ("scaleserve.io", "llmendpoints", "list"),
    ("scaleserve.io", "llmendpoints", "watch"),
    ("scaleserve.io", "llmendpoints", "patch"),
    ("scaleserve.io", "llmendpoints/status", "patch"),
    ("", "events", "create"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("apps", "statefulsets", "delete"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
]
CLUSTER_READS = [
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
]


def _needed() -> list[tuple[str, str, str]]:
    needed = list(OPERATOR_CALLS)
    for child in _children():
        group, plural = _group_and_plural(child["kind"])
        needed += [(group, plural, "create"), (group, plural, "patch")]
        # what the gateway Role grants, the operator must hold (RBAC escalation prevention)
        for rule in child.get("rules", []):
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    needed += [(g, r, v) for v in rule["verbs"]]
    return needed


def test_cluster_scope_grants_what_the_operator_does_cluster_wide(render: Render) -> None:
    manifests = render()
    cluster = _rules(manifests, "ClusterRole")[""]
    assert not _rules(manifests, "Role")
    for group, resource, verb in [*_needed(), *CLUSTER_READS]:
        assert _allows(cluster, group, resource, verb), (group, resource, verb)


def test_namespace_scope_writes_only_in_the_watched_namespaces(render: Render) -> None:
    manifests = render("-f", str(VALUES / "namespaced.yaml"))
    roles = _rules(manifests, "Role")
    assert sorted(roles) == ["team-a", "team-b"]
    for rules in roles.values():
        for group, resource, verb in _needed():
            assert _allows(rules, group, resource, verb), (group, resource, verb)
    cluster = _rules(manifests, "ClusterRole")[""]
    for group, resource, verb in CLUSTER_READS:
        assert _allows(cluster, group, resource, verb), (group, resource, verb)
    assert {v for r in cluster for v in r["verbs"]} <= {"get", "list", "watch"}
    bindings = [
        m
        for m in manifests
        if m["kind"] == "RoleBinding" and not m["metadata"]["name"].endswith(LEADER_ELECTION)
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["subjects"][0]["namespace"] == "scaleserve-system" for b in bindings)
    env = {e["name"]: e["value"] for e in _operator(manifests)["env"]}
    assert env["SCALESERVE_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_namespace_scope_defaults_to_the_release_namespace(render: Render) -> None:
    manifests = render("--set", "operator.scope=namespace")
    assert sorted(_rules(manifests, "Role")) == ["scaleserve-system"]
    env = {e["name"]: e["value"] for e in _operator(manifests)["env"]}
    assert env["SCALESERVE_OPERATOR_NAMESPACES"] == "scaleserve-system"


@pytest.mark.parametrize("case", sorted(CASES))
def test_rbac_has_no_wildcards_and_never_touches_secrets(render: Render, case: str) -> None:
    for m in render(*_args(case)):
        for rule in m.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert "secrets" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def _operator(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_operator_runs_unprivileged_with_probes_on_its_health_port(render: Render) -> None:
    manifests = render()
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _operator(manifests)
    assert container["command"] == ["scaleserve", "operator"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    port = int(env["SCALESERVE_OPERATOR_LIVENESS_PORT"])
    metrics = int(env["SCALESERVE_OPERATOR_METRICS_PORT"])
    assert container["ports"] == [
        {"name": "http", "containerPort": port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": metrics, "protocol": "TCP"},
    ]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env["SCALESERVE_OPERATOR_NAMESPACES"] == ""  # the whole cluster
    # replicas elect a leader (operator/leader.py); a new pod is up before an old one goes
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert env["SCALESERVE_OPERATOR_LEADER_LEASE"] == "scaleserve-system/scaleserve-operator"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (service,) = [m for m in manifests if m["kind"] == "Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", "http"),
        ("metrics", "metrics"),
    ]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics)


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_the_replicas_may_hold_their_lease_and_nothing_else_there(
    render: Render, scope: str
) -> None:
    manifests = render("--set", f"operator.scope={scope}")
    (role,) = [m for m in manifests if m["metadata"]["name"].endswith(LEADER_ELECTION)
               and m["kind"] == "Role"]  # fmt: skip
    assert role["metadata"]["namespace"] == "scaleserve-system"  # the release's, the Lease's
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "create", "update"]},
    ]  # fmt: skip
    (binding,) = [m for m in manifests if m["metadata"]["name"].endswith(LEADER_ELECTION)
                  and m["kind"] == "RoleBinding"]  # fmt: skip
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "scaleserve-operator"


def test_metrics_port_zero_turns_the_metrics_endpoint_off(render: Render) -> None:
    manifests = render("--set", "operator.metricsPort=0")
    container = _operator(manifests)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SCALESERVE_OPERATOR_METRICS_PORT"] == "0"
    assert [p["name"] for p in container["ports"]] == ["http"]
    (service,) = [m for m in manifests if m["kind"] == "Service"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    assert "annotations" not in deployment["spec"]["template"]["metadata"]


def test_pod_annotations_win_over_the_scrape_annotations(render: Render) -> None:
    manifests = render("--set-string", "podAnnotations.prometheus\\.io/scrape=false")
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_custom_values_reach_the_pod(render: Render) -> None:
    manifests = render("-f", str(VALUES / "custom.yaml"))
    container = _operator(manifests)
    assert container["image"] == "registry.example.com/scaleserve/operator:0.1.0-rc1"
    assert container["args"] == ["--verbose"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SCALESERVE_OPERATOR_RECONCILE_INTERVAL_S"] == "5"
    assert env["SCALESERVE_OPERATOR_STATS_TIMEOUT_S"] == "1.5"
    assert env["SCALESERVE_OPERATOR_LIVENESS_PORT"] == "9000"
    assert env["PYTHONASYNCIODEBUG"] == "0"
    names = {m["kind"]: m["metadata"]["name"] for m in manifests}
    assert names["ServiceAccount"] == "llm-ops-sa"
    assert names["Deployment"] == "llm-ops-operator"


def test_the_minimal_values_render_only_the_deployment(render: Render) -> None:
    manifests = render("-f", str(VALUES / "minimal.yaml"))
    assert [m["kind"] for m in manifests] == ["Deployment"]
    pod = manifests[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing-operator"
