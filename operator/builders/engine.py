"""Engine children: one StatefulSet per GPU group and the headless Service over all groups."""

from __future__ import annotations

import json
from typing import Any

from scaleserve.operator.builders.naming import (
    ANNOTATION_NODE,
    ENGINE_GRPC_PORT,
    ENGINE_METRICS_PORT,
    HOSTNAME_LABEL,
    LABEL_GROUP,
    LABEL_GROUP_GPUS,
    LABEL_SERVING,
    Manifest,
    Owner,
    base_labels,
    engine_selector,
    engine_service_account_name,
    engine_service_name,
    group_labels,
    group_statefulset_name,
    metadata,
    scrape_annotations,
)
from scaleserve.operator.builders.security import (
    container_security_context,
    pod_security_context,
    scratch_volume,
)
from scaleserve.operator.builders.tracing import tracing_env
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import EndpointSpec

PRESTOP_SLEEP_S = 5  # let EndpointSlice removal reach the gateways before SIGTERM starts the drain
# The images' HOME (images/engine*.Dockerfile), an emptyDir here: vLLM's compile cache
# (~/.cache/vllm), Triton's (~/.triton) and FlashInfer's JIT cache live under it.
ENGINE_HOME = "/home/scaleserve"


def engine_args(spec: EndpointSpec, tensor_parallel: int) -> list[str]:
    """Flags of `scaleserve engine` (docs/contracts.md) for one engine of `tensor_parallel` GPUs."""
    eng = spec.engine
    args = [
        "--model", spec.model.engine_model,
        "--served-name", spec.model.name,
        "--host", "0.0.0.0",
        "--port", str(ENGINE_GRPC_PORT),
        "--metrics-port", str(ENGINE_METRICS_PORT),
        "--tensor-parallel-size", str(tensor_parallel),
        "--dtype", eng.dtype,
        "--gpu-memory-utilization", str(eng.gpu_memory_utilization),
        "--drain-timeout", str(eng.drain_timeout_seconds),
    ]  # fmt: skip
    if eng.quantization:
        args += ["--quantization", eng.quantization]
    if eng.max_model_len is not None:
        args += ["--max-model-len", str(eng.max_model_len)]
    if eng.max_num_seqs is not None:
        args += ["--max-num-seqs", str(eng.max_num_seqs)]
    args.append("--enable-prefix-caching" if eng.prefix_caching else "--no-enable-prefix-caching")
    if eng.expert_parallel:
        args.append("--enable-expert-parallel")
    if eng.tool_call_parser:
        args += ["--tool-call-parser", eng.tool_call_parser]
    if eng.reasoning_parser:
        args += ["--reasoning-parser", eng.reasoning_parser]
    if spec.task != "generate":  # only when set: generating endpoints keep their pod spec
        args += ["--task", spec.task]
    extra = dict(eng.extra_args)
    if extra:
        args += ["--extra-engine-args", json.dumps(extra, sort_keys=True, separators=(",", ":"))]
    return args


def _resources(spec: EndpointSpec, tensor_parallel: int) -> dict[str, Any]:
    gpu = {spec.gpu.resource_name: str(tensor_parallel)}
    requests = {k: str(v) for k, v in spec.resources.requests.items()}
    limits = {k: str(v) for k, v in spec.resources.limits.items()}
    return {"requests": {**requests, **gpu}, "limits": {**limits, **gpu}}


def _affinity(endpoint: str, group: Group, node: str | None) -> dict[str, Any]:
    # Pod affinity to the group's own label keeps every pod of a group on one node; the pin to
    # the node the operator chose (by free GPUs) makes the group land whole where it fits.
    affinity: dict[str, Any] = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {
                        "matchLabels": {**engine_selector(endpoint), LABEL_GROUP: group.name}
                    },
                    "topologyKey": HOSTNAME_LABEL,
                }
            ]
        }
    }
    if node is not None:
        affinity["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
                        ]
                    }
                ]
            }
        }
    return affinity


def _volumes(spec: EndpointSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The writable folders (the root filesystem is read-only) and the model's claim."""
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.engine.shm_size}}
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    # /tmp holds HF_HOME (hf:// weights are downloaded there: no size limit) and torch
    # inductor's cache; HOME the compile caches
    for volume, mount in (scratch_volume("tmp", "/tmp"), scratch_volume("home", ENGINE_HOME)):
        volumes.append(volume)
        mounts.append(mount)
    claim = spec.model.pvc_claim
    if claim is not None:
        volumes.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
    return volumes, mounts


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "metrics"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _pod_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != LABEL_GROUP_GPUS}


def _engine_container(
    spec: EndpointSpec, owner: Owner, tensor_parallel: int, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": "engine",
        "image": spec.engine.image,
        "command": ["scaleserve", "engine"],
        "args": engine_args(spec, tensor_parallel),
        "env": [
            {"name": "HOME", "value": ENGINE_HOME},
            {"name": "HF_HOME", "value": "/tmp/hf"},
            *tracing_env(spec, owner, "engine"),
        ],
        "ports": [
            {"name": "grpc", "containerPort": ENGINE_GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ENGINE_METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(spec, tensor_parallel),
        # model loading can take many minutes: the startup probe holds liveness off until then
        "startupProbe": _probe("/healthz", 10, 180),
        "readinessProbe": _probe("/readyz", 5, 2),
        "livenessProbe": _probe("/healthz", 10, 6),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}},
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }


def _engine_pod_spec(
    spec: EndpointSpec, owner: Owner, group: Group, node: str | None
) -> dict[str, Any]:
    volumes, mounts = _volumes(spec)
    pod_spec: dict[str, Any] = {
        # engines call no Kubernetes API: their own account, and no token in the pod
        "serviceAccountName": engine_service_account_name(owner.name),
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "affinity": _affinity(owner.name, group, node),
        "containers": [_engine_container(spec, owner, group.tensor_parallel, mounts)],
        "terminationGracePeriodSeconds": spec.engine.drain_timeout_seconds + PRESTOP_SLEEP_S + 10,
        "volumes": volumes,
        "enableServiceLinks": False,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    return pod_spec


def engine_statefulset(
    spec: EndpointSpec, owner: Owner, group: Group, node: str | None
) -> Manifest:
    labels = group_labels(owner.name, group)
    pod_spec = _engine_pod_spec(spec, owner, group, node)
    meta = metadata(owner, group_statefulset_name(owner.name, group), labels)
    if node is not None:
        meta["annotations"] = {ANNOTATION_NODE: node}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "serviceName": engine_service_name(owner.name),
            "replicas": group.replicas,
            # all pods of a group start together: a group is placed as a whole
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": {**engine_selector(owner.name), LABEL_GROUP: group.name}},
            "template": {
                "metadata": {
                    # not the group's GPU count: a resize in place must not roll its pods
                    "labels": {**_pod_labels(labels), LABEL_SERVING: "true"},
                    "annotations": scrape_annotations(ENGINE_METRICS_PORT),
                },
                "spec": pod_spec,
            },
        },
    }


def engine_service_account(owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            owner,
            engine_service_account_name(owner.name),
            {**base_labels(owner.name), "app.kubernetes.io/component": "engine"},
        ),
        "automountServiceAccountToken": False,
    }


def engine_service(owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            owner,
            engine_service_name(owner.name),
            {**base_labels(owner.name), "app.kubernetes.io/component": "engine"},
        ),
        "spec": {
            "clusterIP": "None",
            "selector": {**engine_selector(owner.name), LABEL_SERVING: "true"},
            "ports": [{"name": "grpc", "port": ENGINE_GRPC_PORT, "targetPort": "grpc"}],
            "publishNotReadyAddresses": False,
        },
    }
