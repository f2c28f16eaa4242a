"""The OTEL_* environment that turns request tracing on in gateway and engine pods."""

from __future__ import annotations

from typing import Any

from scaleserve.operator.builders.naming import Owner
from scaleserve.operator.spec import EndpointSpec


def tracing_env(spec: EndpointSpec, owner: Owner, component: str) -> list[dict[str, Any]]:
    """Nothing without spec.tracing (the processes then trace nothing). Sampling is
    parent-based: an engine follows its gateway's decision, a gateway its client's."""
    tracing = spec.tracing
    if tracing is None:
        return []
    resource = f"k8s.namespace.name={owner.namespace},scaleserve.endpoint={owner.name}"
    return [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.endpoint},
        {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": tracing.protocol},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": f"{tracing.sampling_ratio:g}"},
        {"name": "OTEL_SERVICE_NAME", "value": f"scaleserve-{component}"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": resource},
    ]
