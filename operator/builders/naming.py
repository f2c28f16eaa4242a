"""Names, labels and owner references shared by every child of an LLMEndpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaleserve.operator.layout import Group

API_VERSION = "scaleserve.io/v1alpha1"
KIND = "LLMEndpoint"
ENGINE_GRPC_PORT = 50051
ENGINE_METRICS_PORT = 9090
GATEWAY_PORT = 8000
GATEWAY_INTERNAL_PORT = 8001  # /stats (the operator), /metrics (Prometheus), /livez

LABEL_ENDPOINT = "scaleserve.io/endpoint"
LABEL_GROUP = "scaleserve.io/group"
LABEL_TP = "scaleserve.io/tensor-parallel"
LABEL_GROUP_GPUS = "scaleserve.io/group-gpus"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_NODE = "scaleserve.io/node"
# on engine pods that take new requests: the engine Service selects it, so removing it from a
# retired group's pods stops new requests while their streams go on (not in the StatefulSet's
# selector, which would orphan the pods)
LABEL_SERVING = "scaleserve.io/serving"
HOSTNAME_LABEL = "kubernetes.io/hostname"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The LLMEndpoint that owns the children."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def scrape_annotations(port: int) -> dict[str, str]:
    """The prometheus.io annotations that Prometheus' common pod discovery configs follow."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def base_labels(endpoint: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "scaleserve",
        "app.kubernetes.io/instance": endpoint,
        "app.kubernetes.io/managed-by": "scaleserve-operator",
        LABEL_ENDPOINT: endpoint,
    }


def engine_selector(endpoint: str) -> dict[str, str]:
    return {LABEL_ENDPOINT: endpoint, LABEL_COMPONENT: "engine"}


def gateway_selector(endpoint: str) -> dict[str, str]:
    return {LABEL_ENDPOINT: endpoint, LABEL_COMPONENT: "gateway"}


def group_labels(endpoint: str, group: Group) -> dict[str, str]:
    return {
        **base_labels(endpoint),
        LABEL_COMPONENT: "engine",
        LABEL_GROUP: group.name,
        LABEL_TP: str(group.tensor_parallel),
        LABEL_GROUP_GPUS: str(group.size),
    }


def engine_service_name(endpoint: str) -> str:
    return f"{endpoint}-engine"


def engine_service_account_name(endpoint: str) -> str:
    return f"{endpoint}-engine"


def gateway_name(endpoint: str) -> str:
    return f"{endpoint}-gateway"


def group_statefulset_name(endpoint: str, group: Group) -> str:
    return f"{endpoint}-{group.name}"


def gateway_url(owner: Owner) -> str:
    return f"http://{gateway_name(owner.name)}.{owner.namespace}.svc:{GATEWAY_PORT}/v1"


def metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }
