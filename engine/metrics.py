"""The engine's own Prometheus metrics. vLLM's gauges (vllm:*) share the same registry.

Per-request figures are recorded once, when a request ends, never per token.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "scaleserve_engine_requests",
            "Generate calls by outcome: stop, length, abort, cancelled, invalid, refused, ...",
            ["outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "scaleserve_engine_in_flight_requests", "Generate calls open now", registry=registry
        )
        self.ttft = Histogram(
            "scaleserve_engine_time_to_first_token_seconds",
            "From receiving a Generate call to sending its first token",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "scaleserve_engine_request_duration_seconds",
            "From receiving a Generate call to its last message",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "scaleserve_engine_generated_tokens", "Tokens streamed to clients", registry=registry
        )
        self.stream_messages = Counter(
            "scaleserve_engine_stream_messages",
            "Generate response messages sent (fewer than tokens when deltas were coalesced)",
            registry=registry,
        )
        self.serving = Gauge(
            "scaleserve_engine_serving", "1 while Health is SERVING", registry=registry
        )
