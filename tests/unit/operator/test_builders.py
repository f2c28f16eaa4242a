"""Manifest builders: golden manifests plus the properties other components rely on.

Regenerate the golden files after an intended change with
`SCALESERVE_UPDATE_GOLDEN=1 pytest tests/unit/operator/test_builders.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleserve.operator.builders import Observed, Owner, PlacedGroup, desired
from scaleserve.operator.builders.engine import engine_args
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import parse_spec

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner("chat", "serving", "0b7c2a51-0000-4000-8000-000000000001")

CASES: dict[str, tuple[dict[str, Any], list[PlacedGroup]]] = {
    "static-1x8": (
        {
            "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "layout": {"replicas": 1, "tensorParallel": 8},
        },
        [PlacedGroup(Group("g0-tp8", 8, 8), "gpu-node-1")],
    ),
    "autoscaling-mixed": (
        {
            "model": {"uri": "pvc://weights/llama-70b", "servedName": "llama-70b"},
            "engine": {
                "quantization": "fp8",
                "maxModelLen": 8192,
                "maxNumSeqs": 256,
                "prefixCaching": False,
                "expertParallel": True,
                "toolCallParser": "hermes",
                "reasoningParser": "deepseek_r1",
                "extraArgs": {"swap_space": 4},
            },
            "gpu": {"resourceName": "nvidia.com/gpu", "perNode": 8},
            "nodeSelector": {"gpu.nvidia.com/class": "H100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "resources": {"requests": {"cpu": "8", "memory": "64Gi"}},
            "autoscaling": {"gpuBudget": 16, "surgeGPUs": 8},
            "gateway": {
                "replicas": 2,
                "routing": "prefix-affinity",
                "apiKeySecret": {"name": "chat-keys"},
                "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}},
                "deadlines": {"firstTokenSeconds": 300, "idleSeconds": 90},
                "nodeSelector": {"node-role.example.com/cpu": "true"},
                "tolerations": [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}],
            },
            "tracing": {
                "endpoint": "http://otel-collector.observability:4318",
                "samplingRatio": 0.1,
            },
        },
        [
            PlacedGroup(Group("g0-tp8", 8, 8), "gpu-node-1"),
            PlacedGroup(Group("g2-tp1", 8, 1), "gpu-node-3"),
        ],
    ),
}


def _render(name: str) -> list[dict[str, Any]]:
    raw, placed = CASES[name]
    return desired(parse_spec(raw), Observed(OWNER, placed))


@pytest.mark.parametrize("name", sorted(CASES))
def test_manifests_match_the_golden_files(name: str) -> None:
    manifests = _render(name)
    text = yaml.safe_dump_all(json.loads(json.dumps(manifests)), sort_keys=True)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("SCALESERVE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing {path}; run with SCALESERVE_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def _by_kind(manifests: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in kinds]


def _otel_env(manifest: dict[str, Any]) -> dict[str, str]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", ()) if e["name"].startswith("OTEL")}


def test_spec_tracing_becomes_otel_env_on_gateway_and_engine_pods() -> None:
    manifests = _render("autoscaling-mixed")
    (gateway,) = _by_kind(manifests, "Deployment")
    engines = _by_kind(manifests, "StatefulSet")
    assert engines
    for pod, component in [(gateway, "gateway")] + [(e, "engine") for e in engines]:
        assert _otel_env(pod) == {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
            "OTEL_SERVICE_NAME": f"scaleserve-{component}",
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=serving,scaleserve.endpoint=chat",
        }
    # without spec.tracing no pod gets any OTEL_* variable: the processes trace nothing
    for manifest in _by_kind(_render("static-1x8"), "Deployment", "StatefulSet"):
        assert _otel_env(manifest) == {}


def test_every_child_is_owned_by_the_endpoint_and_labelled() -> None:
    for m in _render("autoscaling-mixed"):
        meta = m["metadata"]
        assert meta["namespace"] == "serving"
        assert meta["ownerReferences"][0]["uid"] == OWNER.uid
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["scaleserve.io/endpoint"] == "chat"
        assert meta["labels"]["app.kubernetes.io/instance"] == "chat"


def test_one_statefulset_per_group_each_pod_requesting_tp_gpus() -> None:
    sets = _by_kind(_render("autoscaling-mixed"), "StatefulSet")
    assert [s["metadata"]["name"] for s in sets] == ["chat-g0-tp8", "chat-g2-tp1"]
    for sts, (replicas, tp) in zip(sets, [(1, 8), (8, 1)], strict=True):
        assert sts["spec"]["replicas"] == replicas
        assert sts["spec"]["serviceName"] == "chat-engine"
        pod = sts["spec"]["template"]
        assert pod["metadata"]["labels"]["scaleserve.io/tensor-parallel"] == str(tp)
        engine = pod["spec"]["containers"][0]
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == str(tp)
        assert engine["resources"]["requests"]["nvidia.com/gpu"] == str(tp)
        args = engine["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == str(tp)


def test_engine_pods_probe_the_contract_paths_and_drain() -> None:
    sts = _by_kind(_render("static-1x8"), "StatefulSet")[0]
    pod = sts["spec"]["template"]["spec"]
    engine = pod["containers"][0]
    assert engine["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert engine["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in engine["ports"]
    assert "preStop" in engine["lifecycle"]
    assert pod["terminationGracePeriodSeconds"] > 30
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_a_group_is_pinned_to_its_node_and_held_together() -> None:
    sts = _by_kind(_render("static-1x8"), "StatefulSet")[0]
    affinity = sts["spec"]["template"]["spec"]["affinity"]
    term = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["gpu-node-1"]
    pod_term = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert pod_term["labelSelector"]["matchLabels"]["scaleserve.io/group"] == "g0-tp8"
    assert pod_term["topologyKey"] == "kubernetes.io/hostname"


def test_engine_settings_reach_the_engine_flags() -> None:
    sts = _by_kind(_render("autoscaling-mixed"), "StatefulSet")[0]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--quantization") + 1] == "fp8"
    assert args[args.index("--model") + 1] == "/models/llama-70b"
    assert args[args.index("--served-name") + 1] == "llama-70b"
    assert "--enable-expert-parallel" in args
    assert "--no-enable-prefix-caching" in args
    assert args[args.index("--tool-call-parser") + 1] == "hermes"
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_r1"
    extra = json.loads(args[args.index("--extra-engine-args") + 1])
    assert extra == {"swap_space": 4}


def test_the_endpoints_task_reaches_the_engine_only_when_it_is_embed() -> None:
    raw = {"model": {"uri": "/m"}, "layout": {"replicas": 1, "tensorParallel": 1}}
    assert "--task" not in engine_args(parse_spec(raw), 1)
    args = engine_args(parse_spec({**raw, "task": "embed"}), 1)
    assert args[args.index("--task") + 1] == "embed"


def test_services_follow_the_contract() -> None:
    manifests = _render("static-1x8")
    services = {s["metadata"]["name"]: s for s in _by_kind(manifests, "Service")}
    engine = services["chat-engine"]
    assert engine["spec"]["clusterIP"] == "None"
    assert engine["spec"]["ports"] == [{"name": "grpc", "port": 50051, "targetPort": "grpc"}]
    gateway = services["chat-gateway"]
    assert gateway["spec"]["ports"][0]["port"] == 8000


def test_only_gateways_reach_engines_and_anyone_scrapes_their_metrics() -> None:
    policy = _by_kind(_render("static-1x8"), "NetworkPolicy")[0]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "engine"
    grpc, metrics = policy["spec"]["ingress"]
    assert grpc["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "gateway",
                    "scaleserve.io/endpoint": "chat",
                }
            }
        }
    ]
    assert grpc["ports"] == [{"protocol": "TCP", "port": 50051}]
    assert "from" not in metrics  # any source: Prometheus runs elsewhere
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9090}]


def test_engine_and_gateway_pods_carry_scrape_annotations_for_their_metrics_port() -> None:
    manifests = _render("autoscaling-mixed")
    workloads = _by_kind(manifests, "StatefulSet") + _by_kind(manifests, "Deployment")
    for workload in workloads:
        template = workload["spec"]["template"]
        container = template["spec"]["containers"][0]
        annotations = template["metadata"]["annotations"]
        port = int(annotations["prometheus.io/port"])
        served_by = {p["containerPort"]: p["name"] for p in container["ports"]}
        assert port in served_by, workload["metadata"]["name"]  # a port the container opens
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
    assert len(workloads) >= 2


def test_gateway_watches_endpointslices_with_its_own_role() -> None:
    manifests = _render("autoscaling-mixed")
    role = _by_kind(manifests, "Role")[0]
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    deployment = _by_kind(manifests, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "chat-gateway"
    args = pod["containers"][0]["args"]
    assert args[args.index("--service") + 1] == "chat-engine"
    assert args[args.index("--routing") + 1] == "prefix-affinity"
    # /v1/models lists it, and requests for it are held, while the endpoint has no engine
    assert args[args.index("--served-models") + 1] == "llama-70b"
    assert args[args.index("--api-key-file") + 1] == "/etc/scaleserve/api-key/api-key"
    assert deployment["spec"]["replicas"] == 2


def test_gateways_are_placed_by_their_own_fields_not_the_engines_gpu_ones() -> None:
    pod = _by_kind(_render("autoscaling-mixed"), "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role.example.com/cpu": "true"}
    assert pod["tolerations"] == [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]
    # unset: no placement constraints, even though the engines have a GPU selector and toleration
    raw, placed = CASES["autoscaling-mixed"]
    gateway = {k: v for k, v in raw["gateway"].items() if k not in ("nodeSelector", "tolerations")}
    manifests = desired(parse_spec({**raw, "gateway": gateway}), Observed(OWNER, placed))
    pod = _by_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod
    engine = _by_kind(manifests, "StatefulSet")[0]["spec"]["template"]["spec"]
    assert engine["nodeSelector"] == {"gpu.nvidia.com/class": "H100"}
    assert engine["tolerations"]


def test_apply_order_puts_workloads_last() -> None:
    kinds = [m["kind"] for m in _render("static-1x8")]
    assert kinds.index("ServiceAccount") < kinds.index("StatefulSet") < kinds.index("Deployment")


def _workload_templates(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    workloads = _by_kind(manifests, "StatefulSet") + _by_kind(manifests, "Deployment")
    return [w["spec"]["template"] for w in workloads]


@pytest.mark.parametrize("name", sorted(CASES))
def test_engine_and_gateway_pods_meet_the_restricted_pod_security_standard(name: str) -> None:
    templates = _workload_templates(_render(name))
    assert len(templates) >= 2
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532  # the images' USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        for volume in pod["volumes"]:  # only the volume types `restricted` allows
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "persistentVolumeClaim"}
        scratch = {
            m["mountPath"]
            for m in pod["containers"][0]["volumeMounts"]
            if "emptyDir" in next(v for v in pod["volumes"] if v["name"] == m["name"])
        }
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True
            assert "privileged" not in context
            # every folder the process writes is an emptyDir of the pod
            writable = ["/tmp"] + [
                e["value"] for e in container.get("env", []) if e["name"] in ("HOME", "HF_HOME")
            ]
            for path in writable:
                assert any(path == m or path.startswith(m + "/") for m in scratch), path


def test_engines_run_under_their_own_account_with_no_token_and_gateways_keep_theirs() -> None:
    manifests = _render("static-1x8")
    accounts = {a["metadata"]["name"]: a for a in _by_kind(manifests, "ServiceAccount")}
    assert accounts["chat-engine"]["automountServiceAccountToken"] is False
    engine = _by_kind(manifests, "StatefulSet")[0]["spec"]["template"]["spec"]
    assert engine["serviceAccountName"] == "chat-engine"
    assert engine["automountServiceAccountToken"] is False
    gateway = _by_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]
    assert gateway["serviceAccountName"] == "chat-gateway"
    assert gateway.get("automountServiceAccountToken", True) is True  # it watches EndpointSlices
    assert "automountServiceAccountToken" not in accounts["chat-gateway"]


def _gateway_template(raw: dict[str, Any]) -> dict[str, Any]:
    _, placed = CASES["autoscaling-mixed"]
    deployment = _by_kind(desired(parse_spec(raw), Observed(OWNER, placed)), "Deployment")[0]
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def _model_hash(raw: dict[str, Any]) -> str:
    return str(_gateway_template(raw)["metadata"]["annotations"]["scaleserve.io/model-hash"])


def _edit(raw: dict[str, Any], section: str, **values: Any) -> dict[str, Any]:
    return {**raw, section: {**raw.get(section, {}), **values}}


def test_a_change_of_what_gateways_learn_from_the_engines_rolls_the_gateways() -> None:
    raw, _ = CASES["autoscaling-mixed"]
    engine = raw["engine"]
    before = _model_hash(raw)
    rolling = [
        _edit(raw, "model", uri="pvc://weights/llama-70b-v2"),
        _edit(raw, "model", servedName="llama"),
        _edit(raw, "engine", maxModelLen=4096),
        _edit(raw, "engine", toolCallParser="llama3_json"),
        _edit(raw, "engine", reasoningParser="qwen3"),
        _edit(raw, "engine", extraArgs={**engine["extraArgs"], "tokenizer": "org/other"}),
        _edit(raw, "engine", extraArgs={**engine["extraArgs"], "revision": "v2"}),
    ]
    for edited in rolling:
        assert _model_hash(edited) != before, edited
    no_tools = _edit(raw, "engine", toolCallParser="")
    assert _model_hash({**no_tools, "task": "embed"}) != _model_hash(no_tools)
    # engine-only settings and the layout leave the gateways alone
    unchanged = [
        _edit(raw, "engine", gpuMemoryUtilization=0.8, maxNumSeqs=64),
        _edit(raw, "engine", extraArgs={"swap_space": 8}),
        _edit(raw, "autoscaling", gpuBudget=32, surgeGPUs=0),
    ]
    for edited in unchanged:
        assert _model_hash(edited) == before, edited
        assert _gateway_template(edited) == _gateway_template(raw)


def test_gateways_roll_make_before_break() -> None:
    deployment = _by_kind(_render("static-1x8"), "Deployment")[0]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
