"""Prometheus metrics of one gateway process (its own registry: no module-level state).

With several workers per pod, PROMETHEUS_MULTIPROC_DIR (set by the supervisor before the
workers start) makes the counters and histograms write to files that `pod_metrics` sums.

Per-request work only: counters and histograms are updated once when a request ends, never
per token. Replica gauges are collected when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _LiveCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()


def live_metrics(live: dict[str, Any]) -> Iterator[Metric]:
    """The gauges of a /stats document: one process's, or a pod's summed over its workers."""
    yield GaugeMetricFamily(
        "scaleserve_gateway_in_flight", "Requests being served now", value=float(live["in_flight"])
    )
    yield GaugeMetricFamily(
        "scaleserve_gateway_in_flight_avg",
        "Time-weighted mean of in-flight requests over the stats window",
        value=float(live["in_flight_avg"]),
    )
    yield GaugeMetricFamily(
        "scaleserve_gateway_queued", "Requests waiting for admission", value=float(live["queued"])
    )
    yield GaugeMetricFamily(
        "scaleserve_gateway_held",
        "Requests held because no replica serves their model (scaled to zero or starting)",
        value=float(live["held"]),
    )
    in_flight = GaugeMetricFamily(
        "scaleserve_gateway_replica_in_flight", "Requests in flight per replica", labels=["replica"]
    )
    up = GaugeMetricFamily(
        "scaleserve_gateway_replica_up", "1 while a replica takes new requests", labels=["replica"]
    )
    weight = GaugeMetricFamily(
        "scaleserve_gateway_replica_tensor_parallel",
        "Tensor-parallel degree (routing weight) per replica",
        labels=["replica"],
    )
    for rep in live["replicas"]:
        in_flight.add_metric([rep["address"]], rep["in_flight"])
        up.add_metric([rep["address"]], 1.0 if rep["healthy"] and rep["serving"] else 0.0)
        weight.add_metric([rep["address"]], rep["tensor_parallel"])
    yield in_flight
    yield up
    yield weight


def pod_metrics(multiprocess_dir: str, live: Callable[[], dict[str, Any]]) -> bytes:
    """A pod's /metrics with several workers: the workers' counters and histograms summed by
    prometheus_client's multiprocess mode (the files in `multiprocess_dir`) and the gauges of
    the pod's summed /stats."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    registry.register(_LiveCollector(lambda: live_metrics(live())))
    return generate_latest(registry)


class GatewayMetrics:
    def __init__(self, live: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "scaleserve_gateway_requests",
            "Requests by route and HTTP status",
            ["route", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "scaleserve_gateway_tokens", "Tokens by kind (prompt, completion)", ["kind"], registry=r
        )
        self.ttft = Histogram(
            "scaleserve_gateway_time_to_first_token_seconds",
            "Time from request arrival to the first token from an engine",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "scaleserve_gateway_request_duration_seconds",
            "Time from request arrival to its end",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "scaleserve_gateway_retries", "Requests retried on another replica", registry=r
        )
        self.disconnects = Counter(
            "scaleserve_gateway_client_disconnects",
            "Requests whose client went away before the end",
            registry=r,
        )
        self._live = live
        r.register(_LiveCollector(self._collect_live))

    def _collect_live(self) -> Iterable[Metric]:
        return live_metrics(self._live())

    def render(self) -> bytes:
        return generate_latest(self.registry)
