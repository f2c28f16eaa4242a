"""Disruption and network policy for the engines."""

from __future__ import annotations

from scaleserve.operator.builders.naming import (
    ENGINE_GRPC_PORT,
    ENGINE_METRICS_PORT,
    LABEL_COMPONENT,
    Manifest,
    Owner,
    base_labels,
    engine_selector,
    gateway_selector,
    metadata,
)


def engine_disruption_budget(owner: Owner) -> Manifest:
    """Voluntary evictions take at most one engine pod of the endpoint at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(
            owner, f"{owner.name}-engine", {**base_labels(owner.name), LABEL_COMPONENT: "engine"}
        ),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": engine_selector(owner.name)}},
    }


def engine_network_policy(owner: Owner) -> Manifest:
    """Only the endpoint's gateway pods reach its engines' gRPC port; the metrics port (also
    /healthz and /readyz) is open to any source, so a Prometheus elsewhere can scrape it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            owner, f"{owner.name}-engine", {**base_labels(owner.name), LABEL_COMPONENT: "engine"}
        ),
        "spec": {
            "podSelector": {"matchLabels": engine_selector(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": gateway_selector(owner.name)}}],
                    "ports": [{"protocol": "TCP", "port": ENGINE_GRPC_PORT}],
                },
                {"ports": [{"protocol": "TCP", "port": ENGINE_METRICS_PORT}]},
            ],
        },
    }
