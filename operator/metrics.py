"""The operator's Prometheus metrics: reconcile passes, events, and each endpoint's status.

Endpoint gauges mirror the status the last pass computed (labels namespace, endpoint) and are
removed when the endpoint is deleted; `serve` exposes the registry at /metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PHASES = ("Pending", "Deploying", "Ready", "Reshaping", "Idle", "Degraded")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# status field -> gauge name suffix and help
STATUS_GAUGES = {
    "replicas": ("replicas", "Engine replicas of the endpoint's live groups"),
    "readyReplicas": ("ready_replicas", "Engine replicas ready"),
    "gpus": ("gpus", "GPUs held by the endpoint's live engine groups"),
    "observedConcurrency": (
        "observed_concurrency",
        "Mean in-flight requests over the autoscaling window, as the gateways report them",
    ),
}


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "scaleserve_operator_reconciles",
            "Reconcile passes by outcome: ok, invalid (spec rejected), error (retried)",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "scaleserve_operator_reconcile_duration_seconds",
            "Duration of one reconcile pass over an endpoint",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "scaleserve_operator_events",
            "Kubernetes events posted for endpoints, by type and reason",
            ["type", "reason"],
            registry=self.registry,
        )
        labels = ["namespace", "endpoint"]
        self.status = {
            field: Gauge(
                f"scaleserve_operator_endpoint_{suffix}", help_, labels, registry=self.registry
            )
            for field, (suffix, help_) in STATUS_GAUGES.items()
        }
        self.phase = Gauge(
            "scaleserve_operator_endpoint_phase",
            "1 for the endpoint's current phase, 0 for the others",
            [*labels, "phase"],
            registry=self.registry,
        )
        self.reshaping = Gauge(
            "scaleserve_operator_endpoint_reshaping",
            "1 while the endpoint's engine groups are being reshaped to the target layout",
            labels,
            registry=self.registry,
        )

    def endpoint(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Set the endpoint's gauges from the status a pass computed."""
        for field, gauge in self.status.items():
            value = status.get(field)
            if value is not None:
                gauge.labels(namespace, name).set(value)
        current = status.get("phase")
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if phase == current else 0)
        reshaping = any(
            c.get("type") == "Reshaping" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        self.reshaping.labels(namespace, name).set(1 if reshaping else 0)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted endpoint's series (removing one never set is a no-op)."""
        for gauge in (*self.status.values(), self.reshaping):
            gauge.remove(namespace, name)
        for phase in PHASES:
            self.phase.remove(namespace, name, phase)


async def serve(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Serve GET /metrics on `port` until the returned runner is cleaned up."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
