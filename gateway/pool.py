"""Engine replicas: one long-lived grpc.aio channel each, in-flight accounting, health probes.

Discovery hands the pool the current set of endpoints (`set_endpoints`), which swaps the replica
table in one assignment. A replica takes new work only while it is reachable, its engine says
SERVING, discovery says it is serving and not terminating, and its capacity (tensor-parallel
degree, from ModelInfo) is known. A replica whose call fails as unreachable is taken out at once
and probed back by the health loop. Replicas that disappear or terminate finish what they have;
their channel closes when the last request ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass

import grpc

from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc
from scaleserve.gateway.routing import ReplicaState, Snapshot

log = logging.getLogger("scaleserve.gateway.pool")

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
SERVING = engine_pb2.HealthResponse.SERVING
# How long a replica whose stream stalled gets no new work. Its engine's own watchdog says
# NOT_SERVING once it has been stuck for its stall timeout; this bridges the time until then.
STALL_EJECT_S = 30.0
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # end of a stream (missing from the stubs)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A replica as discovery sees it."""

    address: str
    serving: bool = True
    terminating: bool = False


class Replica:
    """One engine replica and its channel."""

    __slots__ = (
        "address",
        "channel",
        "engine_status",
        "healthy",
        "in_flight",
        "info",
        "last_error",
        "listed",
        "model",
        "outputs",
        "requests_total",
        "serving",
        "stalled_until",
        "stub",
        "terminating",
        "weight",
    )

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = engine_pb2_grpc.EngineStub(self.channel)  # type: ignore[no-untyped-call]
        self.in_flight = 0
        self.requests_total = 0
        self.outputs = 0  # stream messages received from it: proof of life under load
        self.weight = 0  # tensor-parallel degree; 0 until ModelInfo arrives
        self.info: engine_pb2.ModelInfoResponse | None = None
        self.model: Hashable = None  # the gateway's key of the model it serves (from info)
        self.stalled_until = 0.0  # monotonic time until which a stalled replica gets no work
        self.healthy = False  # reachable at the last probe (or call)
        self.engine_status = engine_pb2.HealthResponse.UNKNOWN
        self.serving = True  # discovery: ready/serving
        self.terminating = False  # discovery: terminating
        self.listed = True  # still in discovery's set
        self.last_error = ""

    @property
    def usable(self) -> bool:
        """Able to take new work: reachable, its engine SERVING, discovery says serving."""
        return (
            self.healthy
            and self.engine_status == SERVING
            and self.serving
            and self.listed
            and self.weight > 0
            and self.stalled_until <= time.monotonic()
        )

    @property
    def eligible(self) -> bool:
        return self.usable and not self.terminating

    def state(self) -> ReplicaState:
        return ReplicaState(self.address, self.weight, self.in_flight)


# Learns a replica's model from its ModelInfo; returns the key the gateway routes by.
ModelInfoHandler = Callable[[engine_pb2.ModelInfoResponse], Awaitable[Hashable]]


class ReplicaPool:
    def __init__(
        self,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        on_model_info: ModelInfoHandler | None = None,
        on_eligible: Callable[[], object] | None = None,
    ) -> None:
        self._replicas: dict[str, Replica] = {}
        self._eligible: tuple[Replica, ...] = ()
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self._on_model_info = on_model_info
        self._on_eligible = on_eligible  # called when the replicas taking new work change
        self._closing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # -- membership ------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Swap in discovery's current view."""
        current = self._replicas
        table: dict[str, Replica] = {}
        for ep in endpoints:
            replica = current.get(ep.address) or table.get(ep.address) or Replica(ep.address)
            replica.serving = ep.serving
            replica.terminating = ep.terminating
            replica.listed = True
            table[ep.address] = replica
        for address, replica in list(current.items()):  # _close removes from `current`
            if address not in table:
                replica.listed = False
                if replica.in_flight == 0:
                    self._close(replica)
                else:  # keeps its channel until its requests finish
                    table[address] = replica
        self._replicas = table
        self._refresh()
        self._wake.set()

    def _refresh(self) -> None:
        # Like kube-proxy's terminating endpoints: when no other replica can take new work, a
        # terminating one that still serves (a pod in its preStop, while its replacement is
        # being probed) does, rather than every request failing.
        replicas = self._replicas.values()
        eligible = tuple(r for r in replicas if r.eligible) or tuple(
            r for r in replicas if r.usable
        )
        if eligible != self._eligible:
            self._eligible = eligible
            if self._on_eligible is not None:
                self._on_eligible()

    def _close(self, replica: Replica) -> None:
        self._replicas.pop(replica.address, None)
        task = asyncio.get_running_loop().create_task(replica.channel.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def replicas(self) -> tuple[Replica, ...]:
        return tuple(self._replicas.values())

    def get(self, address: str) -> Replica | None:
        return self._replicas.get(address)

    def any_eligible(self) -> bool:
        return bool(self._eligible)

    def takes_work(self, replica: Replica) -> bool:
        """Whether new requests may go to `replica` now (a terminating one, too, while it is
        the fallback)."""
        return replica in self._eligible

    @property
    def eligible(self) -> tuple[Replica, ...]:
        return self._eligible

    def snapshot(self, exclude: frozenset[str] = frozenset(), model: Hashable = None) -> Snapshot:
        """The replicas that may take new work (of `model`, when given), minus `exclude`."""
        return Snapshot(
            tuple(
                r.state()
                for r in self._eligible
                if r.address not in exclude and (model is None or r.model == model)
            )
        )

    # -- accounting ------------------------------------------------------------------------

    def acquire(self, replica: Replica) -> None:
        replica.in_flight += 1
        replica.requests_total += 1

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        if replica.in_flight == 0 and not replica.listed:
            self._close(replica)

    def report_failure(self, replica: Replica, message: str) -> None:
        """Take a replica out after a call found it unreachable; the health loop probes it back."""
        if replica.healthy:
            log.warning(
                "replica %s failed (%s): taken out until a probe succeeds", replica.address, message
            )
        replica.healthy = False
        replica.last_error = message
        self._refresh()

    def report_stall(self, replica: Replica, what: str) -> None:
        """A stream on `replica` stalled: no new work for STALL_EJECT_S (then probed back)."""
        if replica.stalled_until <= time.monotonic():
            log.warning(
                "replica %s stalled (%s): no new work for %.0fs",
                replica.address,
                what,
                STALL_EJECT_S,
            )
        replica.stalled_until = time.monotonic() + STALL_EJECT_S
        replica.last_error = f"stalled: {what}"
        self._refresh()

    # -- health ----------------------------------------------------------------------------

    async def probe(self, replica: Replica) -> None:
        outputs = replica.outputs
        try:
            health = await replica.stub.Health(
                engine_pb2.HealthRequest(), timeout=self._health_timeout
            )
            if replica.info is None and health.status == SERVING:
                info = await replica.stub.ModelInfo(
                    engine_pb2.ModelInfoRequest(), timeout=max(10.0, self._health_timeout)
                )
                try:
                    if self._on_model_info is not None:
                        replica.model = await self._on_model_info(info)
                except Exception:  # a bad tokenizer must not stop the health loop
                    log.exception("replica %s: cannot use its ModelInfo", replica.address)
                else:
                    replica.info = info
                    replica.weight = max(1, info.tensor_parallel_size)
        except grpc.aio.AioRpcError as exc:
            busy = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and replica.outputs != outputs
            if busy and replica.healthy:
                # Streams from it kept arriving while the probe waited: an engine whose
                # frontend is saturated by its own output answers late, it is not gone.
                log.debug("replica %s answered its probe late while streaming", replica.address)
                return
            if replica.healthy:
                log.warning("replica %s probe failed: %s", replica.address, exc.code().name)
            replica.healthy = False
            replica.last_error = f"{exc.code().name}: {exc.details()}"
        else:
            if not replica.healthy or replica.engine_status != health.status:
                log.info(
                    "replica %s is %s",
                    replica.address,
                    engine_pb2.HealthResponse.Status.Name(health.status),
                )
            replica.healthy = True
            replica.engine_status = health.status
            replica.last_error = health.message
        self._refresh()

    async def probe_all(self) -> None:
        replicas = [r for r in self._replicas.values() if r.listed]
        if not replicas:
            return
        # One probe's end is not the loop's: a replica that discovery drops mid-probe has its
        # channel closed, which cancels the probe's call (gRPC raises CancelledError for that).
        results = await asyncio.gather(*(self.probe(r) for r in replicas), return_exceptions=True)
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, BaseException) and replica.listed:
                log.warning("replica %s: probe ended with %r", replica.address, result)

    async def run_health(self) -> None:
        """Probe every replica every health_interval (and at once when membership changes)."""
        while True:
            self._wake.clear()
            await self.probe_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._health_interval)

    async def close(self) -> None:
        for replica in list(self._replicas.values()):
            self._close(replica)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
