"""Pure manifest builders: `desired(spec, observed) -> manifests` for one LLMEndpoint.

Nothing here talks to a cluster: the handlers pass what they observed (the owner and the
engine groups that should exist, each with the node it is pinned to) and apply the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scaleserve.operator.builders.engine import (
    engine_args,
    engine_service,
    engine_service_account,
    engine_statefulset,
)
from scaleserve.operator.builders.gateway import (
    gateway_deployment,
    gateway_disruption_budget,
    gateway_rbac,
    gateway_service,
)
from scaleserve.operator.builders.naming import (
    ANNOTATION_NODE,
    LABEL_COMPONENT,
    LABEL_ENDPOINT,
    LABEL_GROUP,
    LABEL_GROUP_GPUS,
    LABEL_SERVING,
    LABEL_TP,
    Manifest,
    Owner,
    engine_service_name,
    gateway_name,
    gateway_url,
    group_statefulset_name,
)
from scaleserve.operator.builders.policy import engine_disruption_budget, engine_network_policy
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import EndpointSpec

__all__ = [
    "ANNOTATION_NODE",
    "LABEL_COMPONENT",
    "LABEL_ENDPOINT",
    "LABEL_GROUP",
    "LABEL_GROUP_GPUS",
    "LABEL_SERVING",
    "LABEL_TP",
    "Manifest",
    "Observed",
    "Owner",
    "PlacedGroup",
    "desired",
    "engine_args",
    "engine_service_name",
    "gateway_name",
    "gateway_url",
    "group_statefulset_name",
]


@dataclass(frozen=True)
class PlacedGroup:
    group: Group
    node: str | None = None


@dataclass(frozen=True)
class Observed:
    """What the handler knows: the owner and the engine groups that should exist now."""

    owner: Owner
    groups: Sequence[PlacedGroup] = field(default_factory=tuple)


def desired(spec: EndpointSpec, observed: Observed) -> list[Manifest]:
    """Every child of the endpoint, in apply order (RBAC and Services before workloads)."""
    owner = observed.owner
    manifests: list[Manifest] = [
        *gateway_rbac(owner),
        engine_service_account(owner),
        engine_service(owner),
        gateway_service(owner),
        engine_disruption_budget(owner),
        gateway_disruption_budget(owner),
        engine_network_policy(owner),
    ]
    for placed in sorted(observed.groups, key=lambda p: p.group.name):
        manifests.append(engine_statefulset(spec, owner, placed.group, placed.node))
    manifests.append(gateway_deployment(spec, owner))
    return manifests
