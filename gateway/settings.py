"""The gateway's settings: one frozen object from flags and SCALESERVE_GATEWAY_* env (`load`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from scaleserve.settings import CommaList, Port, Settings

Routing = Literal["round-robin", "least-in-flight", "prefix-affinity"]
Discovery = Literal["static", "kubernetes"]
ROUTING = get_args(Routing)
DISCOVERY = get_args(Discovery)
MAX_WORKERS = 64
AtLeast16 = Annotated[int, Field(ge=16)]


class SettingsError(ValueError):
    """A setting is missing or out of range."""


class GatewaySettings(Settings):
    """How the gateway runs.

    replicas: static engine addresses (host:port); replicas_file: more, one per line.
    discovery: "static" or "kubernetes" (EndpointSlices of `service` in `namespace`, optionally
        narrowed by the label `selector`; the port named `port_name`, else the first).
    routing: round-robin, least-in-flight or prefix-affinity.
    api_key_file: a file with one key per line, or a directory (a mounted Secret) whose files
        each hold one key; empty: no authentication.
    max_concurrency: requests served at once (0: unlimited); max_queue: requests waiting
        beyond that before 429 + Retry-After.
    max_body_bytes: request bodies above this get 413.
    stats_window: seconds over which /stats averages in-flight requests.
    health_interval: seconds between health probes of each replica.
    keep_alive: seconds an idle client connection stays open. Longer than the usual client
        pool expiry (httpx: 5 s) so that the client closes first: a server closing at the same
        moment as a client reuses the connection fails that request.
    internal_port: port of /stats, /metrics and the liveness probe (never the API port).
    Deadlines (seconds; each ends the request with an OpenAI-style error, docs/gateway.md):
    first_token_timeout: from dispatch to an engine to its first message (then one retry on
        another replica); token_idle_timeout: between two messages of a stream;
        queue_timeout: waiting for an admission slot; receive_timeout: to receive a request's
        headers and body; write_timeout: a response write blocked by a client not reading;
        drain_timeout: on SIGTERM, how long in-flight requests may still run; hold_timeout:
        how long a request may be held while no replica serves its model.
    max_held: requests held at once while no replica serves their model (an endpoint scaled to
        zero or starting; 0: none, 503 at once); beyond it, or after hold_timeout, 503 +
        Retry-After.
    served_models: the endpoint's served model names, known before any replica answers: listed
        by /v1/models and held for while no replica serves them; other names get 404.
    max_connections: open client connections (uvicorn's limit_concurrency; beyond it, 503);
    backlog: the listen socket's accept queue.
    workers: gateway processes sharing the API socket (workers.py); the admission and
        connection limits above are the pod's, divided among them.
    """

    model_config = SettingsConfigDict(env_prefix="SCALESERVE_GATEWAY_")
    settings_error = SettingsError

    host: str = "0.0.0.0"
    port: Port = 8000
    replicas: CommaList = ()
    replicas_file: str = ""
    discovery: Discovery = "static"
    namespace: str = "default"
    service: str = ""
    selector: str = ""
    port_name: str = "grpc"
    routing: Routing = "least-in-flight"
    api_key_file: str = ""
    max_concurrency: NonNegativeInt = 1024
    max_queue: NonNegativeInt = 1024
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    stats_window: PositiveFloat = 30.0
    health_interval: PositiveFloat = 1.0
    health_timeout: PositiveFloat = 2.0
    retry_after: PositiveInt = 1
    keep_alive: PositiveFloat = 75.0
    internal_port: Port = 8001
    first_token_timeout: PositiveFloat = 120.0
    token_idle_timeout: PositiveFloat = 60.0
    queue_timeout: PositiveFloat = 30.0
    receive_timeout: PositiveFloat = 30.0
    write_timeout: PositiveFloat = 60.0
    drain_timeout: PositiveFloat = 30.0
    hold_timeout: PositiveFloat = 300.0
    max_held: NonNegativeInt = 256
    served_models: CommaList = ()
    max_connections: AtLeast16 = 8192
    backlog: AtLeast16 = 2048
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 1
    log_level: str = "info"

    @field_validator("replicas")
    @classmethod
    def _addresses(cls, replicas: tuple[str, ...]) -> tuple[str, ...]:
        for address in replicas:
            _check_address(address)
        return replicas

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if self.discovery == "kubernetes" and not (self.service or self.selector):
            raise ValueError("kubernetes discovery needs --service or --selector")
        if self.port == self.internal_port:
            raise ValueError("internal_port must differ from port")
        return self

    def static_replicas(self) -> tuple[str, ...]:
        """Addresses from `replicas` and `replicas_file`, in order, without duplicates."""
        addresses = list(self.replicas)
        if self.replicas_file:
            for line in Path(self.replicas_file).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    _check_address(line)
                    addresses.append(line)
        return tuple(dict.fromkeys(addresses))


def _check_address(text: str) -> None:
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise SettingsError(f"replica address {text!r} is not host:port")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every setting; unset flags fall back to SCALESERVE_GATEWAY_* and defaults."""
    d = GatewaySettings()
    a = parser.add_argument
    a("--host", help=f"listen address (default {d.host})")
    a("--port", type=int, help=f"HTTP port (default {d.port})")
    a("--replicas", help="static engine replicas, host:port,host:port")
    a("--replicas-file", help="file with more replica addresses, one per line")
    a("--discovery", choices=DISCOVERY, help=f"replica discovery (default {d.discovery})")
    a("--namespace", help="namespace of the engine EndpointSlices (kubernetes discovery)")
    a("--service", help="engine Service whose EndpointSlices to watch (kubernetes discovery)")
    a("--selector", help="extra label selector for the EndpointSlices (kubernetes discovery)")
    a("--port-name", help=f"EndpointSlice port name of the engine (default {d.port_name})")
    a("--routing", choices=ROUTING, help=f"routing policy (default {d.routing})")
    a("--api-key-file", help="file (one key per line) or Secret mount directory of API keys")
    a("--max-concurrency", type=int, help=f"requests served at once (default {d.max_concurrency})")
    a("--max-queue", type=int, help=f"requests waiting beyond that (default {d.max_queue})")
    a("--max-body-bytes", type=int, help=f"largest request body (default {d.max_body_bytes})")
    a("--stats-window", type=float, help=f"/stats averaging window, s (default {d.stats_window})")
    a(
        "--health-interval",
        type=float,
        help=f"replica probe period, s (default {d.health_interval})",
    )
    a("--health-timeout", type=float, help=f"replica probe timeout, s (default {d.health_timeout})")
    a("--retry-after", type=int, help=f"Retry-After seconds on 429 (default {d.retry_after})")
    a("--keep-alive", type=float, help=f"idle connection timeout, s (default {d.keep_alive})")
    a("--internal-port", type=int, help=f"/stats, /metrics, liveness (default {d.internal_port})")
    deadline_help = {
        "first_token_timeout": "engine's first message, then a retry elsewhere",
        "token_idle_timeout": "between two messages of a stream",
        "queue_timeout": "waiting for an admission slot",
        "receive_timeout": "receiving a request's headers and body",
        "write_timeout": "a write blocked by a client that does not read",
        "drain_timeout": "in-flight requests may run on after SIGTERM",
        "hold_timeout": "a request held while no replica serves its model",
    }
    for name, what in deadline_help.items():
        a(f"--{name.replace('_', '-')}", type=float, help=f"{what}, s (default {getattr(d, name)})")
    a("--max-held", type=int, help=f"requests held while no replica serves (default {d.max_held})")
    a("--served-models", help="the endpoint's served model names, name,name (before any replica)")
    a(
        "--max-connections",
        type=int,
        help=f"open client connections (default {d.max_connections})",
    )
    a("--backlog", type=int, help=f"listen backlog (default {d.backlog})")
    a("--workers", type=int, help=f"gateway processes sharing the port (default {d.workers})")
    a("--log-level", help=f"log level (default {d.log_level})")


def worker_share(total: int, workers: int, index: int) -> int:
    """Worker `index`'s part of a per-pod limit: the parts add up to `total` (0, unlimited,
    stays 0), and none is 0 when the total is smaller than the number of workers."""
    if total == 0:
        return 0
    return max(1, total // workers + (1 if index < total % workers else 0))
