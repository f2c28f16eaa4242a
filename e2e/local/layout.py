"""Waiting on what the gateway and the operator report while a layout changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from e2e.local.endpoints import LocalEndpoint

log = logging.getLogger("e2e")


def serving_replicas(stats: dict[str, Any]) -> list[tuple[str, int]]:
    """(address, tensor-parallel degree) of the replicas the gateway sends new work to."""
    return sorted(
        (r["address"], int(r["tensor_parallel"])) for r in stats["replicas"] if r["serving"]
    )


async def wait_until(
    check: Callable[[], Any], what: str, timeout_s: float, interval_s: float = 0.5
) -> float:
    """Poll a blocking `check` in a thread until it returns truthy; returns the monotonic time."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(check)
        except Exception as exc:  # a gateway restarting, an API hiccup: keep polling
            last = exc
        if last:
            return time.monotonic()
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


async def wait_gateway_serves(
    ep: LocalEndpoint, tensor_parallel: int, replicas: int, timeout_s: float
) -> float:
    """When the gateway has `replicas` serving replicas of `tensor_parallel` (the new layout)."""

    last = [""]

    def check() -> bool:
        stats = ep.gateway_stats()
        serving = serving_replicas(stats)
        seen = f"serving {serving}, in flight (avg) {round(stats['in_flight_avg'])}"
        if seen != last[0]:  # progress: log what changed
            log.info("%s gateway: %s", ep.name, seen)
            last[0] = seen
        return sum(1 for _, tp in serving if tp == tensor_parallel) >= replicas

    return await wait_until(check, f"{replicas} x TP{tensor_parallel} serving", timeout_s)


async def wait_status(ep: LocalEndpoint, layout: str, timeout_s: float) -> float:
    """When the operator reports the endpoint Ready at `layout` (the old groups gone)."""

    def check() -> bool:
        status = ep.status()
        log.info("%s: %s %s - %s", ep.name, status.get("phase"), status.get("currentLayout"),
                 status.get("message"))  # fmt: skip
        return status.get("currentLayout") == layout and ep.ready()

    return await wait_until(check, f"{ep.name} Ready at {layout}", timeout_s, interval_s=1.0)
