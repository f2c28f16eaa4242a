"""The concurrency signal: each gateway pod's /stats (docs/contracts.md), windowed per endpoint."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from scaleserve.latency import DegreeLatency, Measured, merge, parse_report
from scaleserve.operator.errors import StatsUnavailableError
from scaleserve.operator.layout import Window
from scaleserve.operator.snapshot import ReplicaLoad


def stats_urls(
    template: str, namespace: str, endpoint: str, pods: Sequence[Mapping[str, Any]]
) -> list[str]:
    """One URL per running gateway pod (skipping pods without an IP if the template needs one)."""
    urls = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        if pod.get("status", {}).get("phase") != "Running":
            continue
        ip = pod.get("status", {}).get("podIP") or ""
        if not ip and "{pod_ip}" in template:
            continue
        urls.append(
            template.format(
                pod_ip=ip, pod_name=pod["metadata"]["name"], namespace=namespace, endpoint=endpoint
            )
        )
    return urls


@dataclass(frozen=True)
class GatewayLoad:
    """The gateways' sample: time-averaged requests in flight (summed), requests held while
    no engine replica is ready (summed over the gateways that answered), and the latency they
    measured per tensor-parallel degree (None: no gateway reports it)."""

    in_flight: float
    held: int = 0
    latency: Measured | None = None


async def _read_one(session: aiohttp.ClientSession, url: str) -> GatewayLoad:
    async with session.get(url) as resp:
        resp.raise_for_status()
        data = await resp.json(content_type=None)
    value = float(data.get("in_flight_avg", data.get("in_flight", 0.0)))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{url}: in_flight_avg {value!r}")
    # a gateway that predates holding requests leaves `held` out, one that predates the
    # latency report `latency`; a malformed report is dropped, not the load
    held = data.get("held")
    latency = None
    if "latency" in data:
        try:
            latency = Measured(float(data.get("window_s") or 0.0), parse_report(data["latency"]))
        except (ValueError, TypeError, KeyError):
            latency = None
    return GatewayLoad(value, held if isinstance(held, int) and held > 0 else 0, latency)


async def read_concurrency(session: aiohttp.ClientSession, urls: Sequence[str]) -> GatewayLoad:
    """Sum of the gateways' time-averaged in-flight requests and of the requests they hold;
    gateways that fail are skipped."""
    if not urls:
        raise StatsUnavailableError("no running gateway pod")
    results = await asyncio.gather(*(_read_one(session, u) for u in urls), return_exceptions=True)
    loads = [r for r in results if isinstance(r, GatewayLoad)]
    if not loads:
        raise StatsUnavailableError(f"no gateway answered /stats: {results[0]!r}")
    # a gateway that did not answer is assumed to carry the average load of those that did
    scale = len(urls) / len(loads)
    mean = sum(r.in_flight for r in loads) * scale
    return GatewayLoad(mean, sum(r.held for r in loads), _latency(loads, scale))


def _latency(loads: Sequence[GatewayLoad], scale: float) -> Measured | None:
    """The gateways' latency reports as one: histograms add up (each gateway saw its own
    requests), in-flight means too, scaled like the load for gateways that did not answer."""
    reports = [r.latency for r in loads if r.latency is not None]
    if not reports:
        return None
    degrees = merge(d for r in reports for d in r.degrees)
    scaled = tuple(
        DegreeLatency(d.tensor_parallel, d.in_flight_avg * scale, d.ttft_ms, d.tbt_ms)
        for d in degrees
    )
    return Measured(max(r.window_s for r in reports), scaled)


def _host(address: str) -> str:
    """The IP of a gateway's replica address ("ip:port" or "[ipv6]:port")."""
    return address.rsplit(":", 1)[0].strip("[]")


async def _replicas_of(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(url) as resp:
        resp.raise_for_status()
        data = await resp.json(content_type=None)
    return list(data.get("replicas") or [])


async def read_replica_load(
    session: aiohttp.ClientSession, urls: Sequence[str]
) -> dict[str, ReplicaLoad] | None:
    """Per engine pod IP: requests in flight summed over the gateways, and whether any gateway
    sends it new requests; None unless every gateway answered (no gateway: nothing routed)."""
    results = await asyncio.gather(
        *(_replicas_of(session, u) for u in urls), return_exceptions=True
    )
    load: dict[str, ReplicaLoad] = {}
    for result in results:
        if isinstance(result, BaseException):
            return None
        for r in result:
            ip = _host(str(r.get("address", "")))
            seen = load.get(ip, ReplicaLoad(0, False))
            load[ip] = ReplicaLoad(
                seen.in_flight + int(r.get("in_flight") or 0), seen.routed or bool(r.get("serving"))
            )
    return load


Key = tuple[str, str, str]  # namespace, name, uid


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (time, value) samples, per second; 0 with fewer than two times."""
    n = len(samples)
    if n < 2:
        return 0.0
    t_mean = sum(t for t, _ in samples) / n
    v_mean = sum(v for _, v in samples) / n
    spread = sum((t - t_mean) ** 2 for t, _ in samples)
    if spread <= 0:
        return 0.0
    return sum((t - t_mean) * (v - v_mean) for t, v in samples) / spread


def endpoint_key(meta: Mapping[str, Any]) -> Key:
    """What in-memory state of an endpoint is keyed by: its UID as well as its name, so an
    endpoint recreated under the name of a deleted one starts afresh."""
    return meta["namespace"], meta["name"], meta.get("uid", "")


class Windows:
    """Per-endpoint concurrency samples; kept in memory (after a restart the window refills).
    Samples are kept for the window, or for the trend's span when that is longer."""

    def __init__(self) -> None:
        self._samples: dict[Key, deque[tuple[float, float]]] = {}
        self._since: dict[Key, float] = {}

    def add(self, key: Key, now: float, value: float, keep_s: float) -> None:
        samples = self._samples.setdefault(key, deque())
        self._since.setdefault(key, now)
        samples.append((now, value))
        self._trim(samples, now, keep_s)

    def get(self, key: Key, now: float, window_s: float, trend_s: float = 0.0) -> Window:
        """The mean over the last `window_s` and the trend (slope) over the last
        max(window_s, trend_s) seconds."""
        samples = self._samples.get(key)
        if not samples:
            return Window(None, 0.0, 0)
        span = max(window_s, trend_s)
        self._trim(samples, now, span)
        recent = [s for s in samples if s[0] >= now - window_s]
        if not recent:
            return Window(None, 0.0, 0)
        mean = sum(v for _, v in recent) / len(recent)
        return Window(mean, now - self._since[key], len(recent), slope(samples))

    def reset(self, key: Key) -> None:
        self._samples.pop(key, None)
        self._since.pop(key, None)

    @staticmethod
    def _trim(samples: deque[tuple[float, float]], now: float, window_s: float) -> None:
        while samples and samples[0][0] < now - window_s:
            samples.popleft()
