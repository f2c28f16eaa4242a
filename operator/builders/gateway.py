"""Gateway children: Deployment, Service, PodDisruptionBudget, and the ServiceAccount, Role and
RoleBinding."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from scaleserve.operator.builders.naming import (
    GATEWAY_INTERNAL_PORT,
    GATEWAY_PORT,
    LABEL_COMPONENT,
    Manifest,
    Owner,
    base_labels,
    engine_service_name,
    gateway_name,
    gateway_selector,
    metadata,
    scrape_annotations,
)
from scaleserve.operator.builders.security import (
    container_security_context,
    pod_security_context,
    scratch_volume,
)
from scaleserve.operator.builders.tracing import tracing_env
from scaleserve.operator.spec import EndpointSpec

API_KEY_DIR = "/etc/scaleserve/api-key"
ANNOTATION_MODEL_HASH = "scaleserve.io/model-hash"
# vLLM engine arguments that change what ModelInfo tells a gateway (tokenizer files, chat
# template, context length)
MODEL_INFO_ARGS = ("tokenizer", "tokenizer_mode", "tokenizer_revision", "revision", "hf_overrides")
# Shutdown: the preStop pause lets the Service's endpoints drop the pod before the gateway stops
# accepting; then it drains for DRAIN_S (`--drain-timeout`), ends what is left with an error
# event, and uvicorn closes 5 s later. The grace period covers all of it with room to spare.
PRE_STOP_S = 5
DRAIN_S = 30
TERMINATION_GRACE_S = PRE_STOP_S + DRAIN_S + 5 + 10
# A gateway relays bytes; without requests it would be BestEffort, first to be evicted and
# starved under load. The user's resources win key by key.
DEFAULT_REQUESTS = {"cpu": "500m", "memory": "512Mi"}
MAX_WORKERS = 64  # the CRD's bound on spec.gateway.workers
QUANTITY_SUFFIXES = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    **{s: 1024.0**i for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}


def _labels(owner: Owner) -> dict[str, str]:
    return {**base_labels(owner.name), LABEL_COMPONENT: "gateway"}


def gateway_args(spec: EndpointSpec, owner: Owner) -> list[str]:
    """Flags of `scaleserve gateway` (docs/contracts.md)."""
    args = [
        "--host", "0.0.0.0",
        "--port", str(GATEWAY_PORT),
        "--discovery", "kubernetes",
        "--namespace", owner.namespace,
        "--service", engine_service_name(owner.name),
        "--routing", spec.gateway.routing,
        "--served-models", spec.model.name,
        "--internal-port", str(GATEWAY_INTERNAL_PORT),
        "--drain-timeout", str(DRAIN_S),
    ]  # fmt: skip
    if spec.autoscaling is not None:
        args += ["--stats-window", str(spec.autoscaling.window_seconds)]
    args += ["--workers", str(gateway_workers(spec))]
    deadlines = spec.gateway.deadlines
    for flag, value in (
        ("--first-token-timeout", deadlines.first_token_seconds),
        ("--token-idle-timeout", deadlines.idle_seconds),
        ("--queue-timeout", deadlines.queue_seconds),
        ("--receive-timeout", deadlines.receive_seconds),
        ("--write-timeout", deadlines.write_stall_seconds),
    ):
        if value is not None:
            args += [flag, f"{value:g}"]
    secret = spec.gateway.api_key_secret
    if secret is not None:
        args += ["--api-key-file", f"{API_KEY_DIR}/{secret.key}"]
    return args


def gateway_workers(spec: EndpointSpec) -> int:
    """Gateway processes per pod: spec.gateway.workers, else one per whole core of the
    container's CPU limit (a worker is one event loop, one core at most), else 1."""
    gw = spec.gateway
    if gw.workers is not None:
        return gw.workers
    limit = gw.resources.limits.get("cpu")
    if limit is None:
        return 1
    return max(1, min(MAX_WORKERS, int(cpu_cores(limit))))


def cpu_cores(quantity: str | int) -> float:
    """A Kubernetes quantity (the CRD's pattern) as a number: 2, "1500m", "0.5", "1e3"."""
    text = str(quantity)
    for suffix in sorted(QUANTITY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * QUANTITY_SUFFIXES[suffix]
    return float(text)


def model_hash(spec: EndpointSpec) -> str:
    """A digest of what a gateway learns from the engines once, at its start (model name,
    tokenizer, chat template, context length, tool parser): in the pod template, a change rolls
    the gateways, which would otherwise keep serving the first model they saw."""
    extra = spec.engine.extra_args
    facts: dict[str, Any] = {
        "uri": spec.model.uri,
        "servedName": spec.model.name,
        "maxModelLen": spec.engine.max_model_len,
        "engineArgs": {k: extra[k] for k in MODEL_INFO_ARGS if k in extra},
    }
    if spec.engine.tool_call_parser:  # only when set: endpoints without it keep their digest
        facts["toolCallParser"] = spec.engine.tool_call_parser
    if spec.engine.reasoning_parser:  # the same: only when set
        facts["reasoningParser"] = spec.engine.reasoning_parser
    if spec.task != "generate":  # likewise: the engines' ModelInfo says the task
        facts["task"] = spec.task
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _volumes(spec: EndpointSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volume, mount = scratch_volume("tmp", "/tmp", "128Mi")  # the root filesystem is read-only
    volumes, mounts = [volume], [mount]
    secret = spec.gateway.api_key_secret
    if secret is not None:
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "api-key",
                "secret": {
                    "secretName": secret.name,
                    "items": [{"key": secret.key, "path": secret.key}],
                },
            }
        )
    return volumes, mounts


def _probe(path: str, port: str, period_s: int, failures: int) -> dict[str, Any]:
    # timeouts generous enough for a gateway relaying thousands of streams on a busy node
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _gateway_container(
    spec: EndpointSpec, owner: Owner, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    gw = spec.gateway
    container: dict[str, Any] = {
        "name": "gateway",
        "image": gw.image,
        "command": ["scaleserve", "gateway"],
        "args": gateway_args(spec, owner),
        "ports": [
            {"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"},
            {"name": "internal", "containerPort": GATEWAY_INTERNAL_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": _probe("/readyz", "http", period_s=5, failures=3),
        # answered off the event loop: fails only when the loop is wedged, not when it is busy
        "livenessProbe": _probe("/livez", "internal", period_s=10, failures=6),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
        "resources": {
            "requests": {
                **DEFAULT_REQUESTS,
                **{k: str(v) for k, v in gw.resources.requests.items()},
            },
            "limits": {k: str(v) for k, v in gw.resources.limits.items()},
        },
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    env = tracing_env(spec, owner, "gateway")
    if env:
        container["env"] = env
    return container


def _gateway_pod_spec(spec: EndpointSpec, owner: Owner) -> dict[str, Any]:
    gw = spec.gateway
    volumes, mounts = _volumes(spec)
    pod_spec: dict[str, Any] = {
        # its token stays mounted: discovery watches the engines' EndpointSlices
        "serviceAccountName": gateway_name(owner.name),
        "securityContext": pod_security_context(),
        "containers": [_gateway_container(spec, owner, mounts)],
        "volumes": volumes,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
    }
    # gateways are CPU pods: they are placed by their own fields, not by the engines' GPU
    # nodeSelector and tolerations
    if gw.node_selector:
        pod_spec["nodeSelector"] = dict(gw.node_selector)
    if gw.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in gw.tolerations]
    return pod_spec


def gateway_deployment(spec: EndpointSpec, owner: Owner) -> Manifest:
    labels = _labels(owner)
    gw = spec.gateway
    pod_spec = _gateway_pod_spec(spec, owner)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, gateway_name(owner.name), labels),
        "spec": {
            "replicas": gw.replicas,
            "selector": {"matchLabels": gateway_selector(owner.name)},
            # make-before-break: a new gateway is Ready before an old one goes
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        **scrape_annotations(GATEWAY_INTERNAL_PORT),
                        ANNOTATION_MODEL_HASH: model_hash(spec),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def gateway_service(owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, gateway_name(owner.name), _labels(owner)),
        "spec": {
            "type": "ClusterIP",
            "selector": gateway_selector(owner.name),
            "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}],
        },
    }


def gateway_disruption_budget(owner: Owner) -> Manifest:
    """Voluntary evictions take at most one gateway pod of the endpoint at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, gateway_name(owner.name), _labels(owner)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": gateway_selector(owner.name)}},
    }


def gateway_rbac(owner: Owner) -> list[Manifest]:
    name = gateway_name(owner.name)
    labels = _labels(owner)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(owner, name, labels),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(owner, name, labels),
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(owner, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]
